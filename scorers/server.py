"""`densedpo serve-scorer`: one reward model on `POST /classify`, answering as vLLM's pooling runner does.

Routes: GET /health, GET /v1/models, POST /classify with `{"model", "messages": [{"role": "user", "content":
[text and image_url parts]}], "use_activation": false}` -> `{"data": [{"index": 0, "probs": [...]}], "usage":
{"prompt_tokens": n}}`. One forward at a time, in a worker thread.

  python -m scorers.server --model CHECKPOINT_FOLDER --port 8001
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def parse_request(body, model_id: str) -> tuple[str, list[str]] | str:
    """(text, image data URLs) of a /classify request, or what is wrong with it (answered as 400)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or len(body["messages"]) != 1:
        return "the body must be a JSON object with `messages`: one user message"
    if body.get("model") not in (None, model_id):
        return f"The model `{body.get('model')}` does not exist."
    if body.get("use_activation") not in (None, False):
        return "this scorer returns raw rewards: use_activation must be false or absent"
    content = body["messages"][0].get("content") if isinstance(body["messages"][0], dict) else None
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return "message content must be a string or a list of parts"
    texts, images = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and str((part.get("image_url") or {}).get("url", "")).startswith("data:image/"):
            images.append(part["image_url"]["url"])
        else:
            return f"bad content part {str(part)[:80]} (text, or image_url with a data:image/ URL)"
    return "".join(texts), images


def create_app(model, model_id: str) -> Starlette:
    """`model.score(text, frames) -> (outputs, prompt_tokens)` behind the /classify contract."""
    from scorers.videoreward import decode_data_url

    lock = threading.Lock()

    def run(text: str, urls: list[str]):
        frames = [decode_data_url(u) for u in urls]
        with lock:
            return model.score(text, frames)

    async def classify(request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = None
        parsed = parse_request(body, model_id)
        if isinstance(parsed, str):
            status = 404 if "does not exist" in parsed else 400
            return JSONResponse({"error": {"message": parsed, "code": status}}, status)
        try:
            outputs, tokens = await run_in_threadpool(run, *parsed)
        except ValueError as e:  # an undecodable image, a prompt without the reward tokens
            return JSONResponse({"error": {"message": str(e), "code": 400}}, 400)
        return JSONResponse(
            {
                "object": "list",
                "model": model_id,
                "data": [{"index": 0, "probs": outputs, "num_classes": len(outputs)}],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": model_id, "object": "model"}]})

    async def health(request: Request):
        return JSONResponse({})

    return Starlette(
        routes=[Route("/classify", classify, methods=["POST"]), Route("/v1/models", models), Route("/health", health)]
    )


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8001) -> None:
    import uvicorn

    from densedpo.errors import DenseDPOError
    from scorers.videoreward import VideoReward

    try:
        model = VideoReward(model_path)
    except DenseDPOError as e:
        raise SystemExit(f"error: {e}") from None
    uvicorn.run(create_app(model, model_path), host=host, port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a VideoReward checkpoint folder (model_config.json, checkpoint-N/)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    args = ap.parse_args(argv)
    if not Path(args.model).is_dir():
        raise SystemExit(f"error: --model {args.model} is not a folder")
    serve(args.model, args.host, args.port)


if __name__ == "__main__":
    main()
