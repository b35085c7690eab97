"""The Label Studio round trip: pairs out to a project (both videos synced, one left/right/tie choice per 1 s
segment, the judge's labels as pre-annotations unless blind), every annotator's labels back into a labels table.

Plain HTTP (httpx) against Label Studio's REST API, not label-studio-sdk: the SDK pins numpy < 2.3 (through
opencv), which densedpo's environment (vLLM, torch) does not take, and five endpoints do not need it. Videos are
served by Label Studio from its local-files storage under its document root (LOCAL_FILES_DOCUMENT_ROOT): they are
referenced, never copied into its database. The token comes from an environment variable and is never written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.segments import segment_bounds
from densedpo.tables import LABELS, PAIRS, one_judge, read_table, resolve_path
from densedpo.video import probe
from review.page import HumanStore, human_row, left_side, queue_order, to_preference
from review.uncertain import uncertain_queue

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
        self.http.headers.pop("Authorization", None)  # an expired Bearer would make the refresh itself a 401
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

    def segments_in_config(self, project: int) -> int:
        """How many segment choices the project's labeling config holds; refuses a config densedpo did not write."""
        config = self.call("GET", f"/api/projects/{project}").get("label_config") or ""
        if 'name="video_left"' not in config:
            raise DenseDPOError(
                f"Label Studio project {project} has a labeling config densedpo did not write (no video_left); "
                "export to a new --project."
            )
        return 1 + max((int(k) for k in re.findall(r'<Choices name="seg_(\d+)"', config)), default=-1)

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
    budget: int | None = None  # --order uncertain: the pairs holding this many least sure segments
    blind: bool = False
    seed: int = 0
    segment_seconds: float = 1.0
    token_env: str = "LABEL_STUDIO_API_KEY"
    keys: Path | None = None  # --blind: where the task -> pair and side keys are kept [densedpo's cache]


def pair_segments(pairs_path: Path, row: dict, labels: pd.DataFrame | None, segment_seconds: float) -> list[dict]:
    """A pair's segments: the judge's rows when there are labels, else cut from the video as `label` would."""
    if labels is not None and row["pair_id"] in set(labels["pair_id"]):
        rows = labels[labels["pair_id"] == row["pair_id"]].sort_values("segment_idx")
        return rows.to_dict("records")
    info = probe(resolve_path(pairs_path, row["video_a"]))
    return [s.__dict__ for s in segment_bounds(info.num_frames, info.fps, segment_seconds)]


def video_path(cfg: ExportConfig, row: dict, side: str) -> Path:
    """A pair's video, which must lie under the document root (Label Studio serves nothing else)."""
    root = cfg.document_root.resolve()
    path = resolve_path(cfg.pairs, row[f"video_{side}"]).resolve()
    if not path.is_relative_to(root):
        raise DenseDPOError(
            f"video {path} (pair {row['pair_id']!r}, column video_{side}) is outside --document-root {root}: Label "
            "Studio serves only files under its LOCAL_FILES_DOCUMENT_ROOT; start it with a root above the videos."
        )
    return path


# ---------------------------------------------------------------------------------------------- blind projects
# A blind task must not tell the sides by anything an annotator sees: no `left`, no pair id (an evaluate pair id
# names the policy), and no path (`..._a.mp4`, `samples/dense/...`). Its videos are links with opaque names in a
# folder of the project's own; which pair and side each task shows is kept in a keys file outside Label Studio.


def blind_folder(document_root: Path, project: str) -> Path:
    return document_root.resolve() / ".densedpo-blind" / hashlib.sha256(project.encode()).hexdigest()[:16]


def default_keys_path(url: str, project: str) -> Path:
    from densedpo.files import cache_root

    name = hashlib.sha256(f"{url.rstrip('/')}|{project}".encode()).hexdigest()[:16]
    return cache_root() / "label-studio" / f"{name}.keys.json"


class BlindKeys:
    """task key -> (pair id, side shown on the left), and the secret the opaque names are drawn from."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (OSError, ValueError) as e:
            raise DenseDPOError(
                f"--keys {self.path} is not a blind export's keys file ({e}); pass the one it printed."
            ) from None
        if not isinstance(data, dict):
            raise DenseDPOError(f"--keys {self.path} is not a blind export's keys file; pass the one it printed.")
        self.secret = data.get("secret") or secrets.token_hex(16)
        self.tasks: dict[str, dict] = data.get("tasks", {})

    def name(self, *parts: str) -> str:
        return hmac.new(self.secret.encode(), ":".join(parts).encode(), "sha256").hexdigest()[:20]

    def save(self) -> None:
        from densedpo.files import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"secret": self.secret, "tasks": self.tasks}, indent=1)
        atomic_write_text(self.path, body, mode=0o600)


def blind_link(src: Path, folder: Path, name: str) -> Path:
    """An opaquely named hard link to the video (a copy across file systems)."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{name}{src.suffix}"
    if not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return dst


def build_task(
    cfg: ExportConfig,
    row: dict,
    segs: list[dict],
    max_segments: int,
    keys: BlindKeys | None = None,
    asked: dict[tuple[str, int], str] | None = None,
) -> dict:
    """One pair as a Label Studio task (+ the judge's labels as a prediction unless blind)."""
    left = left_side(row["pair_id"], cfg.seed, cfg.blind)
    right = "b" if left == "a" else "a"
    root = cfg.document_root.resolve()

    def url(side: str) -> str:
        path = video_path(cfg, row, side)
        if keys is not None:
            path = blind_link(path, blind_folder(root, cfg.project), keys.name(row["pair_id"], side))
        return LOCAL_FILES + str(path.relative_to(root))

    keep = ("segment_idx", "frame_start", "frame_end", "t_start_s", "t_end_s")
    data = {"caption": row["prompt"], "video_left": url(left), "video_right": url(right), "blind": cfg.blind}
    if keys is None:
        data.update(pair_id=row["pair_id"], left=left)
    else:
        task_key = keys.name("task", row["pair_id"])
        keys.tasks[task_key] = {"pair_id": row["pair_id"], "left": left}
        data["task_key"] = task_key
    data["segments"] = json.dumps([{k: _plain(s[k]) for k in keep} for s in segs])
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
        if s is not None and not cfg.blind:
            text += thought_note(s, left)
        why = (asked or {}).get((row["pair_id"], int(s["segment_idx"]))) if s is not None else None
        if why is not None:  # --order uncertain; blind: that it was chosen, not the judge's answers behind it
            text += " · asked: " + ("chosen for review" if cfg.blind else why)
        data[f"seg_{k}"] = text
    task = {"data": data}
    if result:
        model = str(segs[0].get("judge") or segs[0].get("judge_model") or "judge")
        task["predictions"] = [{"model_version": model, "result": result}]
    return task


THOUGHT_CHARS = 400  # per order in a task's note; the whole thought is in the labels table and the review page


def thought_note(segment: dict, left: str) -> str:
    """A reasoning judge's thoughts as the segment's note, per order in the annotator's terms (which video was
    shown first: left or right), each cut to THOUGHT_CHARS; "" for a judge that does not think."""
    notes = []
    for order in ("ab", "ba"):
        thought = segment.get(f"reasoning_{order}")
        if not isinstance(thought, str):
            continue
        first = "left" if order[0] == left else "right"
        text = thought if len(thought) <= THOUGHT_CHARS else thought[:THOUGHT_CHARS] + "…"
        notes.append(f"judge's thought with the {first} video shown first: {text or '(not returned by the endpoint)'}")
    return "".join(f" · {n}" for n in notes)


def export_pairs(cfg: ExportConfig, ls: LabelStudio | None = None) -> dict:
    """Create or update the project and add the pairs it does not hold yet (by pair id). Returns counts."""
    pairs = read_table(cfg.pairs, PAIRS)
    labels, asked = None, {}
    if cfg.labels is not None:
        table = read_table(cfg.labels, LABELS)
        labels = one_judge(table, cfg.labels, cfg.judge, flag="--judge")
    if cfg.order == "uncertain":  # the members' split counts too: ranked on the whole table unless --judge
        order, asked = uncertain_queue(labels if cfg.judge else table, cfg.budget)
    else:
        order = queue_order(pairs, labels, cfg.order, cfg.seed)
    rows = pairs.set_index("pair_id", drop=False).loc[order].to_dict("records")[: cfg.limit]
    # Every check before the first call that changes Label Studio: a refused export leaves nothing there.
    paths = [video_path(cfg, r, s) for r in rows for s in "ab"]
    segs = {r["pair_id"]: pair_segments(cfg.pairs, r, labels, cfg.segment_seconds) for r in rows}
    max_segments = max((len(s) for s in segs.values()), default=1)
    ls = ls or LabelStudio(cfg.url, token_from(cfg.token_env))
    keys = BlindKeys(cfg.keys or default_keys_path(cfg.url, cfg.project)) if cfg.blind else None
    project = ls.project(cfg.project, label_config(max_segments))
    # The config grows, never shrinks: tasks annotated under a longer one keep every choice.
    max_segments = max(max_segments, ls.segments_in_config(project))
    ls.call("PATCH", f"/api/projects/{project}", json={"label_config": label_config(max_segments)})
    if keys is not None:
        blind_folder(cfg.document_root, cfg.project).mkdir(parents=True, exist_ok=True)  # a storage's path must exist
        ls.ensure_storage(project, blind_folder(cfg.document_root, cfg.project))
    elif paths:
        ls.ensure_storage(project, Path(os.path.commonpath([p.parent for p in paths])))
    tasks = ls.tasks(project)
    have = {t["data"].get("pair_id") for t in tasks} | {
        keys.tasks.get(t["data"].get("task_key"), {}).get("pair_id") for t in tasks if keys is not None
    }
    new = [build_task(cfg, r, segs[r["pair_id"]], max_segments, keys, asked) for r in rows if r["pair_id"] not in have]
    if keys is not None:
        keys.save()  # before the tasks exist: no task is ever without its key
    if new:
        ls.call("POST", f"/api/projects/{project}/import", json=new)
    counts = {"project": project, "pairs offered": len(rows), "tasks added": len(new)}
    if asked:
        counts["segments asked (least sure first)"] = len(asked)
    counts["already there"] = len(rows) - len(new)
    if keys is not None:
        counts["keys (which pair and side each task shows)"] = str(keys.path)
    return counts


# ---------------------------------------------------------------------------------------------- import


def task_pair(data: dict, keys: BlindKeys | None, where: str) -> tuple[str, str]:
    """(pair id, side on the left) of a task: in its data, or (blind) in the export's keys file."""
    if "task_key" not in data:
        return data["pair_id"], data["left"]
    found = keys.tasks.get(data["task_key"]) if keys is not None else None
    if found is None:
        path = keys.path if keys is not None else "the keys file"
        raise DenseDPOError(
            f"{where} was exported --blind and {path} does not know its task {data['task_key']}: pass --keys with "
            "the file the export printed (on the machine that exported)."
        )
    return found["pair_id"], found["left"]


def annotation_rows(task: dict, users: dict[int, str], keys: BlindKeys | None = None, where: str = "") -> list[dict]:
    """Every submitted (not skipped) annotation of a task as human label rows; one annotator's later annotation
    of the same task supersedes an earlier one (Label Studio lets a user annotate a task twice)."""
    data = task["data"]
    pair_id, left = task_pair(data, keys, where or "the project")
    segs = {int(s["segment_idx"]): s for s in json.loads(data["segments"])}
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
            rows.append(human_row(pair_id, seg, pref, choices[0], who, bool(data.get("blind")), left))
    return rows


def import_labels(
    url: str, project: str, out: Path, token_env: str = "LABEL_STUDIO_API_KEY", ls=None, keys: Path | None = None
) -> dict:
    """The project's annotations as they are now, in `out` (judge_model "human", annotator = the account): new and
    changed labels are journaled, labels whose annotation was deleted or cleared in Label Studio are removed, an
    unchanged label is not written again. Rows from elsewhere (the review page, other projects) stay. Counts."""
    ls = ls or LabelStudio(url, token_from(token_env))
    tasks = ls.tasks(ls.project(project))
    users = ls.users()
    blind = any("task_key" in t.get("data", {}) for t in tasks)
    key_file = BlindKeys(keys or default_keys_path(url, project)) if blind else None
    where = f"Label Studio project {project!r}"
    rows = [r for t in tasks if "segments" in t.get("data", {}) for r in annotation_rows(t, users, key_file, where)]
    source = f"label-studio:{url.rstrip('/')}#{project}"
    store = HumanStore(out)
    if not rows and not store.has_source(source):
        raise DenseDPOError(
            f"project {project!r} has no submitted annotation yet ({len(tasks)} tasks); nothing written."
        )
    changes = store.sync(source, rows)
    annotators = sorted({r["annotator"] for r in rows})
    return {
        "tasks": len(tasks),
        "labels": len(rows),
        **changes,
        "annotators": ", ".join(annotators) or "–",
        "written to": str(out),
    }


def _plain(v):
    return v.item() if hasattr(v, "item") else v
