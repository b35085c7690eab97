"""The Label Studio round trip: pairs out to a project (both videos synced, one left/right/tie choice per 1 s
segment, the judge's labels as pre-annotations unless blind), every annotator's labels back into a labels table.

Plain HTTP (httpx) against Label Studio's REST API, not label-studio-sdk: the SDK pins numpy < 2.3 (through
opencv), which densedpo's environment (vLLM, torch) does not take, and five endpoints do not need it. Videos are
served by Label Studio from its local-files storage under its document root (LOCAL_FILES_DOCUMENT_ROOT): they are
referenced, never copied into its database. The token comes from an environment variable and is never written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.segments import segment_bounds
from densedpo.tables import LABELS, PAIRS, one_judge, read_table, resolve_path
from densedpo.video import probe
from review.page import HumanStore, human_row, left_side, queue_order, to_preference

CHOICES = ("left", "right", "tie")
LOCAL_FILES = "/data/local-files/?d="


def label_config(max_segments: int) -> str:
    """Both videos side by side and synced, the caption, and one single choice per segment (its time range from
    the task's seg_k text)."""
    parts = [
        "<View>",
        '  <Header value="$caption" size="5"/>',
        '  <View style="display: grid; grid-template-columns: 1fr 1fr; gap: 8px">',
        '    <Video name="video_left" value="$video_left" sync="pair" height="280"/>',
        '    <Video name="video_right" value="$video_right" sync="pair" height="280"/>',
        "  </View>",
    ]
    for k in range(max_segments):
        parts += [
            f'  <Header value="$seg_{k}" size="6"/>',
            f'  <Choices name="seg_{k}" toName="video_left" choice="single-radio" showInline="true">',
            *(f'    <Choice value="{c}"/>' for c in CHOICES),
            "  </Choices>",
        ]
    return "\n".join(parts + ["</View>"])


class LabelStudio:
    """The few Label Studio endpoints densedpo uses, with errors that name the call and Label Studio's answer."""

    def __init__(self, url: str, token: str, timeout_s: float = 120.0):
        self.url, self.token = url.rstrip("/"), token
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s)
        self.authorize()

    def authorize(self) -> None:
        """A personal access token (a JWT, Label Studio's default) is exchanged for a short-lived access token
        (Bearer); a legacy token is sent as it is (Token)."""
        if self.token.count(".") != 2:
            self.http.headers["Authorization"] = f"Token {self.token}"
            return
        r = self._send("POST", "/api/token/refresh", json={"refresh": self.token})
        if r.status_code != 200:
            raise DenseDPOError(f"Label Studio at {self.url} refused the personal access token ({r.status_code}): "
                                "check --token-env.")  # fmt: skip
        self.http.headers["Authorization"] = f"Bearer {r.json()['access']}"

    def _send(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            return self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise DenseDPOError(f"cannot reach Label Studio at {self.url} ({type(e).__name__}: {e}).") from None

    def call(self, method: str, path: str, **kw):
        r = self._send(method, path, **kw)
        if r.status_code == 401 and self.token.count(".") == 2:  # the access token expired: once more
            self.authorize()
            r = self._send(method, path, **kw)
        if r.status_code == 401:
            raise DenseDPOError(f"Label Studio at {self.url} refused the token (401): check --token-env.")
        if r.status_code >= 400:
            raise DenseDPOError(f"Label Studio answered {r.status_code} to {method} {path}: {r.text[:400]}")
        return r.json() if r.content else None

    def project(self, name: str, config: str | None = None) -> int:
        """The id of the project titled `name`; created with `config` when missing (and config given)."""
        found = self.call("GET", "/api/projects", params={"title": name, "page_size": 1000})
        found = found["results"] if isinstance(found, dict) else found
        match = [p for p in found if p.get("title") == name]
        if match:
            return int(match[0]["id"])
        if config is None:
            raise DenseDPOError(f"Label Studio at {self.url} has no project {name!r}; export to it first.")
        return int(self.call("POST", "/api/projects", json={"title": name, "label_config": config})["id"])

    def ensure_storage(self, project: int, folder: Path) -> None:
        """A local-files storage of the project covering `folder` (Label Studio serves only files under one)."""
        have = self.call("GET", "/api/storages/localfiles", params={"project": project})
        if any(Path(s["path"]) == folder or folder.is_relative_to(Path(s["path"])) for s in have):
            return
        body = {"project": project, "path": str(folder), "use_blob_urls": False, "title": "densedpo videos"}
        self.call("POST", "/api/storages/localfiles", json=body)

    def tasks(self, project: int) -> list[dict]:
        """Every task of the project with its data and annotations (the JSON export)."""
        params = {"exportType": "JSON", "download_all_tasks": "true"}
        return self.call("GET", f"/api/projects/{project}/export", params=params)

    def users(self) -> dict[int, str]:
        """User id -> the account's email (else username)."""
        return {int(u["id"]): u.get("email") or u.get("username") for u in self.call("GET", "/api/users")}


def token_from(env: str) -> str:
    token = os.environ.get(env, "").strip()
    if not token:
        raise DenseDPOError(f"no Label Studio token: set {env} (Account & Settings → Access token), or --token-env.")
    return token


# ---------------------------------------------------------------------------------------------- export


@dataclass
class ExportConfig:
    pairs: Path
    url: str
    project: str
    document_root: Path
    labels: Path | None = None
    judge: str | None = None
    order: str = "least-confident"
    limit: int | None = None
    blind: bool = False
    seed: int = 0
    segment_seconds: float = 1.0
    token_env: str = "LABEL_STUDIO_API_KEY"


def pair_segments(pairs_path: Path, row: dict, labels: pd.DataFrame | None, segment_seconds: float) -> list[dict]:
    """A pair's segments: the judge's rows when there are labels, else cut from the video as `label` would."""
    if labels is not None and row["pair_id"] in set(labels["pair_id"]):
        rows = labels[labels["pair_id"] == row["pair_id"]].sort_values("segment_idx")
        return rows.to_dict("records")
    info = probe(resolve_path(pairs_path, row["video_a"]))
    return [s.__dict__ for s in segment_bounds(info.num_frames, info.fps, segment_seconds)]


def build_task(cfg: ExportConfig, row: dict, segs: list[dict], max_segments: int) -> dict:
    """One pair as a Label Studio task (+ the judge's labels as a prediction unless blind)."""
    left = left_side(row["pair_id"], cfg.seed, cfg.blind)
    right = "b" if left == "a" else "a"
    root = cfg.document_root.resolve()

    def url(side: str) -> str:
        path = resolve_path(cfg.pairs, row[f"video_{side}"]).resolve()
        if not path.is_relative_to(root):
            raise DenseDPOError(
                f"video {path} is outside --document-root {root}: Label Studio serves only files under its "
                "LOCAL_FILES_DOCUMENT_ROOT; start it with a root above the pairs' videos."
            )
        return LOCAL_FILES + str(path.relative_to(root))

    keep = ("segment_idx", "frame_start", "frame_end", "t_start_s", "t_end_s")
    data = {
        "pair_id": row["pair_id"],
        "caption": row["prompt"],
        "video_left": url(left),
        "video_right": url(right),
        "left": left,
        "blind": cfg.blind,
        "segments": json.dumps([{k: _plain(s[k]) for k in keep} for s in segs]),
    }
    result = []
    for k in range(max_segments):
        s = segs[k] if k < len(segs) else None
        text = f"segment {k + 1}: {s['t_start_s']:.1f}–{s['t_end_s']:.1f} s" if s else ""
        judged = (
            s is not None and not cfg.blind and s.get("status") == "ok" and s.get("preference") in ("a", "b", "tie")
        )
        if s is not None and not cfg.blind and not judged and s.get("status"):
            text += f" · judge: no label ({s['status']})"  # low confidence, inconsistent orders, a failed request
        if judged:
            side = {"a": "left" if left == "a" else "right", "b": "right" if left == "a" else "left", "tie": "tie"}
            choice = side[s["preference"]]
            conf = s.get("confidence")
            text += f" · judge: {choice}" + (f" ({float(conf):.2f})" if conf is not None and conf == conf else "")
            result.append({"from_name": f"seg_{k}", "to_name": "video_left", "type": "choices",
                           "value": {"choices": [choice]}})  # fmt: skip
        data[f"seg_{k}"] = text
    task = {"data": data}
    if result:
        model = str(segs[0].get("judge") or segs[0].get("judge_model") or "judge")
        task["predictions"] = [{"model_version": model, "result": result}]
    return task


def export_pairs(cfg: ExportConfig, ls: LabelStudio | None = None) -> dict:
    """Create or update the project and add the pairs it does not hold yet (by pair id). Returns counts."""
    ls = ls or LabelStudio(cfg.url, token_from(cfg.token_env))
    pairs = read_table(cfg.pairs, PAIRS)
    labels = None
    if cfg.labels is not None:
        labels = one_judge(read_table(cfg.labels, LABELS), cfg.labels, cfg.judge, flag="--judge")
    order = queue_order(pairs, labels, cfg.order, cfg.seed)
    rows = pairs.set_index("pair_id", drop=False).loc[order].to_dict("records")[: cfg.limit]
    segs = {r["pair_id"]: pair_segments(cfg.pairs, r, labels, cfg.segment_seconds) for r in rows}
    max_segments = max((len(s) for s in segs.values()), default=1)
    project = ls.project(cfg.project, label_config(max_segments))
    ls.call("PATCH", f"/api/projects/{project}", json={"label_config": label_config(max_segments)})
    folders = [resolve_path(cfg.pairs, r[f"video_{s}"]).resolve().parent for r in rows for s in "ab"]
    if folders:
        ls.ensure_storage(project, Path(os.path.commonpath(folders)))
    have = {t["data"].get("pair_id") for t in ls.tasks(project)}
    new = [build_task(cfg, r, segs[r["pair_id"]], max_segments) for r in rows if r["pair_id"] not in have]
    if new:
        ls.call("POST", f"/api/projects/{project}/import", json=new)
    return {
        "project": project,
        "pairs offered": len(rows),
        "tasks added": len(new),
        "already there": len(rows) - len(new),
    }


# ---------------------------------------------------------------------------------------------- import


def annotation_rows(task: dict, users: dict[int, str]) -> list[dict]:
    """Every submitted (not skipped) annotation of a task as human label rows; one annotator's later annotation
    of the same task supersedes an earlier one (Label Studio lets a user annotate a task twice)."""
    data = task["data"]
    left, segs = data["left"], {int(s["segment_idx"]): s for s in json.loads(data["segments"])}
    by_user: dict[str, dict] = {}
    for ann in task.get("annotations", []):
        if ann.get("was_cancelled"):
            continue
        who = ann.get("completed_by")
        who = who.get("email") if isinstance(who, dict) else users.get(int(who), str(who))
        if who not in by_user or (ann.get("updated_at") or "", ann["id"]) > (
            by_user[who].get("updated_at") or "",
            by_user[who]["id"],
        ):
            by_user[who] = ann
    rows = []
    for who, ann in sorted(by_user.items()):
        for item in ann.get("result", []):
            name, choices = item.get("from_name", ""), (item.get("value") or {}).get("choices") or []
            if not name.startswith("seg_") or not choices:
                continue
            k = int(name.removeprefix("seg_"))
            seg = segs.get(sorted(segs)[k]) if k < len(segs) else None
            if seg is None:
                continue
            pref = to_preference(choices[0], left)
            rows.append(human_row(data["pair_id"], seg, pref, choices[0], who, bool(data.get("blind")), left))
    return rows


def import_labels(url: str, project: str, out: Path, token_env: str = "LABEL_STUDIO_API_KEY", ls=None) -> dict:
    """Every annotation of the project into `out` (judge_model "human", annotator = the account), through the
    review page's journal and atomic write. Returns counts."""
    ls = ls or LabelStudio(url, token_from(token_env))
    tasks = ls.tasks(ls.project(project))
    users = ls.users()
    rows = [r for t in tasks if "segments" in t.get("data", {}) for r in annotation_rows(t, users)]
    if not rows:
        raise DenseDPOError(
            f"project {project!r} has no submitted annotation yet ({len(tasks)} tasks); nothing written."
        )
    HumanStore(out).save_many(rows)
    annotators = sorted({r["annotator"] for r in rows})
    return {"tasks": len(tasks), "labels": len(rows), "annotators": ", ".join(annotators), "written to": str(out)}


def _plain(v):
    return v.item() if hasattr(v, "item") else v
