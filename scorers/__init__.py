"""Reward models densedpo runs itself with transformers, served over HTTP in the shape the labeler speaks.

The labeler never imports torch: a scorer vLLM cannot serve (videoreward.py) runs in its own process
(server.py, `densedpo serve-scorer`), which `densedpo label --judge score --api transformers` starts and stops
like an embedded vLLM, and which answers `POST /classify` exactly as vLLM's pooling runner does.
"""
