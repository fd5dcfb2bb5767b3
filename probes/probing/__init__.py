"""Future-token probes: targets, linear probes, count baselines, per-pair metrics, and the probe job.

`targets` (labels per (τ, target)) → `linear` (softmax and least-squares probes) and `baselines`
(unigram, skip-bigram) → `metrics` (per-pair scores, document-bootstrap intervals) → `run` (the job).
"""
