"""What a comparison refuses: runs whose numbers would not be what the comparison says they are.

One run given in two roles, or two runs of one model (a gap of exactly 0); a model in the role of another
training mode (a gap of the wrong sign); an eval run that scored a model with another forward than its own
(a bigram model with its past visible); an eval run that split its model's own training data otherwise than
training did (held-out windows that were trained on). Each is a one-line UsageError.
"""

from __future__ import annotations

from analysis.comparison import ROLE_OF_KIND, Subject
from probes.errors import UsageError
from probes.runs import Run, same_data


def check_subjects(subjects: dict[str, Subject]) -> None:
    """Refuse what would give a number that is not what it claims: one run in two roles, a model in the role of
    another kind, an eval run that used another forward than its model's, or split another way than training."""
    roles = list(subjects)
    for index, role in enumerate(roles):
        for other in roles[index + 1 :]:
            check_distinct(role, subjects[role], other, subjects[other])
    for role, subject in subjects.items():
        for run in subject.runs.values():
            check_role(role, run)
        if subject.eval is not None:
            check_eval_forward(subject.eval)
            check_eval_split(subject.eval)


def check_distinct(role: str, subject: Subject, other_role: str, other: Subject) -> None:
    for stage, run in subject.runs.items():
        twin = other.runs.get(stage)
        if twin is None:
            continue
        if run.path.resolve() == twin.path.resolve():
            raise UsageError(f"--{role} and --{other_role} name the same {stage} run ({run.path}): give each its own")
        if run.weights_hash is not None and run.weights_hash == twin.weights_hash:
            raise UsageError(
                f"--{role} {run.path} and --{other_role} {twin.path} are {stage} runs of the same model "
                f"(weights {run.weights_hash[:12]}): give a run of each model"
            )


def check_role(role: str, run: Run) -> None:
    """A run whose model was trained in another mode than its role says (its results and training.json tell)."""
    belongs = ROLE_OF_KIND.get(run.kind)
    if belongs is not None and belongs != role:
        raise UsageError(
            f"--{role} {run.path} is a run of a {run.kind} model, not a {role} one; give it as --{belongs} "
            "(were two roles swapped?)"
        )


def check_eval_forward(run: Run) -> None:
    """A bigram model's loss is its loss with past keys and values zeroed; every other model's, with them."""
    used = run.setting("forward")
    if used is None and "forward" in run.results.columns and run.results["forward"].notna().any():
        used = str(run.results["forward"].dropna().iloc[0])
    own = "bigram" if run.kind == "bigram" else "vanilla"
    if used in ("vanilla", "bigram") and used != own:
        raise UsageError(
            f"{run.path} scored a {run.kind} model with the {used} forward, not its own ({own}): its loss is not "
            "the model's; rerun probe-future eval on it without --forward"
        )


def check_eval_split(run: Run) -> None:
    """An eval run on a checkpoint's own training data must split the documents as training did."""
    data_info = run.training().get("data_info") or {}
    trained_seed, trained_data = data_info.get("seed"), data_info.get("spec")
    seed, data = run.setting("seed"), (run.provenance.get("data") or {}).get("spec")
    if trained_seed is None or seed is None or int(seed) == int(trained_seed):
        return
    if data is None or trained_data is None or same_data(str(data), str(trained_data)):
        raise UsageError(
            f"{run.path} split the documents with seed {seed}, but its model was trained with seed {trained_seed}: "
            "its held-out windows include training documents; rerun probe-future eval without --seed"
        )
