"""MC-Diffusion training: pure losses (``losses``), run configs (``config``) and datasets (``datasets``).

Stage 1 is visual-prompt SFT (ε/v-prediction MSE on image, caption and the emotion's visual prompt);
stage 2 is DPO with a negative visual prompt (``method.md`` §3 in the shared docs). The loop that runs
models lives apart from these modules, so the maths and the data handling are tested without any model.
"""
