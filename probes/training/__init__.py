"""Training: language models in a gradient mode (`lm`, the `train` command), on the shared engine (`loop`).

`myopic` holds the gradient modes (vanilla, myopic, strict-myopic, bigram) as context managers for any
GPT-2, GPT-NeoX or Llama model; `losses` the next-token cross-entropy; `presets` the architectures.
"""

from probes.training.lm import TrainConfig, train
from probes.training.myopic import MODES, bigram, gradient_mode, myopic

__all__ = ["MODES", "TrainConfig", "bigram", "gradient_mode", "myopic", "train"]
