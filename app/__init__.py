"""The application: the `densedpo` command line, the demo and the tools built on every stage.

The floors read bottom-up: `densedpo/` (foundation) → `generation/`, `labeler/`, `dpo/` (stages) → `app/`.
Nothing imports `app`.
"""
