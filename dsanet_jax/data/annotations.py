"""Parsers for the official annotation and class-list files (no video I/O here).

Every parser fails loudly on a malformed file with an `AnnotationError` naming the file and the
line (`path:line: what is wrong`). Formats:
  Kinetics CSV:   header `label,youtube_id,time_start,time_end,split[,is_cc]` (5 or 6 columns; test
                  files may lack `label`), quoted labels, ids may start with '-'.
  SSv2 JSON:      `[{"id": "...", "label": "...", "template": "... [something] ...",
                  "placeholders": [...]}, ...]`; test files hold only ids. Labels JSON:
                  `{"template without brackets": "id", ...}`.
  SSv1 CSV:       `id;label` per line (test: `id`), label list one name per line.
  Generic list:   `path<TAB or spaces>label` per line (label = class name or integer index), or
                  `path` alone (label = the parent folder's name).
  Class names:    one name per line, or `index name` lines (UCF101 classInd.txt), or a JSON
                  `{name: index}` / list.
"""

import csv
import dataclasses
import json
import os
import re
from typing import Any

KINETICS_REQUIRED = ("youtube_id", "time_start", "time_end")
KINETICS_OPTIONAL = ("label", "split", "is_cc")


class AnnotationError(ValueError):
  """A malformed annotation or class-list file; the message starts with `path:line:`."""


def _fail(path: str | os.PathLike, line: int | None, msg: str) -> AnnotationError:
  where = f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
  return AnnotationError(f"{where}: {msg}")


def _read_text(path: str | os.PathLike) -> str:
  if not os.path.isfile(path):
    raise _fail(path, None, "annotation file not found")
  with open(path, encoding="utf-8-sig") as f:
    return f.read()


# ---------------------------------------------------------------------------------- class lists
def read_class_names(path: str | os.PathLike) -> list[str]:
  """Class names in id order from a names file (formats in the module docstring)."""
  text = _read_text(path)
  if os.fspath(path).endswith(".json"):
    return _class_names_from_json(path, text)
  lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
  if not lines:
    raise _fail(path, None, "no class names in the file")
  indexed = [re.fullmatch(r"(\d+)[\s,;]+(.+)", ln) for _, ln in lines]
  if all(indexed):
    by_index = {}
    for (lineno, _), m in zip(lines, indexed):
      idx = int(m.group(1))
      if idx in by_index:
        raise _fail(path, lineno, f"class index {idx} given twice")
      by_index[idx] = m.group(2).strip()
    first = min(by_index)
    if first not in (0, 1) or sorted(by_index) != list(range(first, first + len(by_index))):
      raise _fail(path, None, "class indices must be consecutive from 0 or 1")
    names = [by_index[i] for i in sorted(by_index)]
  else:
    names = [ln for _, ln in lines]
  _check_unique(path, names)
  return names


def _class_names_from_json(path: str, text: str) -> list[str]:
  data = _load_json(path, text)
  if isinstance(data, list):
    names = [str(n) for n in data]
  elif isinstance(data, dict):
    try:
      by_id = {int(v): k for k, v in data.items()}
    except (TypeError, ValueError) as e:
      raise _fail(path, None, f"expected {{name: integer id}}: {e}") from e
    if sorted(by_id) != list(range(len(data))):
      raise _fail(path, None, f"ids must be 0..{len(data) - 1}, each once")
    names = [by_id[i] for i in range(len(data))]
  else:
    raise _fail(path, None, f"expected a JSON list or object, got {type(data).__name__}")
  _check_unique(path, names)
  return names


def _check_unique(path: str, names: list[str]) -> None:
  seen = set()
  for n in names:
    if n in seen:
      raise _fail(path, None, f"class name {n!r} appears twice")
    seen.add(n)


def _load_json(path: str, text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise _fail(path, e.lineno, f"invalid JSON (column {e.colno}): {e.msg}") from e


# ---------------------------------------------------------------------------------- Kinetics
@dataclasses.dataclass(frozen=True)
class KineticsRow:
  youtube_id: str
  time_start: int
  time_end: int
  label: str | None  # None in unlabelled (test) files
  split: str | None
  line: int

  @property
  def clip_name(self) -> str:
    """`{youtube_id}_{start:06d}_{end:06d}`: the file stem of the common download scripts."""
    return f"{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}"


def read_kinetics_csv(path: str | os.PathLike) -> list[KineticsRow]:
  """Rows of an official Kinetics CSV (5- or 6-column, or label-less test form)."""
  text = _read_text(path)
  reader = csv.reader(text.splitlines())
  try:
    header = [h.strip() for h in next(reader)]
  except StopIteration:
    raise _fail(path, 1, "empty file: expected a header") from None
  missing = [c for c in KINETICS_REQUIRED if c not in header]
  if missing:
    raise _fail(path, 1, f"header {header} lacks column(s) {missing}")
  unknown = [c for c in header if c not in KINETICS_REQUIRED + KINETICS_OPTIONAL]
  if unknown:
    raise _fail(path, 1, f"header {header} has unknown column(s) {unknown}")
  col = {c: i for i, c in enumerate(header)}
  rows = []
  for fields in reader:
    lineno = reader.line_num
    if not fields or all(not f.strip() for f in fields):
      continue
    if len(fields) != len(header):
      raise _fail(
        path, lineno, f"expected {len(header)} columns ({','.join(header)}), got {len(fields)}"
      )
    try:
      start, end = (int(float(fields[col[c]])) for c in ("time_start", "time_end"))
    except ValueError:
      raise _fail(path, lineno, "time_start/time_end must be numbers") from None
    youtube_id = fields[col["youtube_id"]].strip()
    if not youtube_id:
      raise _fail(path, lineno, "empty youtube_id")
    label = fields[col["label"]].strip() if "label" in col else None
    split = fields[col["split"]].strip() if "split" in col else None
    rows.append(KineticsRow(youtube_id, start, end, label or None, split, lineno))
  return rows


# ---------------------------------------------------------------------------------- SSv2
def template_to_label(template: str) -> str:
  """SSv2 class name: the template with '[' and ']' removed (as the official labels JSON)."""
  return template.replace("[", "").replace("]", "")


def iter_json_array(path: str | os.PathLike) -> list[tuple[int, object]]:
  """(line, element) for each element of a top-level JSON array, so errors can name lines."""
  text = _read_text(path)
  decoder = json.JSONDecoder()
  ws = re.compile(r"\s*")
  pos = ws.match(text, 0).end()
  if pos >= len(text) or text[pos] != "[":
    raise _fail(path, text.count("\n", 0, pos) + 1, "expected a JSON array '['")
  pos = ws.match(text, pos + 1).end()
  out = []
  if pos < len(text) and text[pos] == "]":
    return out
  line, counted = 1, 0  # line number of text[counted], advanced incrementally (files are big)

  def line_at(p: int) -> int:
    nonlocal line, counted
    line += text.count("\n", counted, p)
    counted = p
    return line

  while True:
    start_line = line_at(pos)
    try:
      obj, pos = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise _fail(path, e.lineno, f"invalid JSON (column {e.colno}): {e.msg}") from e
    out.append((start_line, obj))
    pos = ws.match(text, pos).end()
    if pos < len(text) and text[pos] == ",":
      pos = ws.match(text, pos + 1).end()
      continue
    if pos < len(text) and text[pos] == "]":
      if text[pos + 1 :].strip():
        raise _fail(path, line_at(pos), "extra data after the JSON array")
      return out
    raise _fail(path, line_at(pos), "expected ',' or ']' in the JSON array")


@dataclasses.dataclass(frozen=True)
class SSv2Entry:
  video_id: str
  template: str | None  # None in the test file
  label_text: str | None  # the label with the placeholders filled in
  placeholders: tuple[str, ...]
  line: int

  @property
  def class_name(self) -> str | None:
    return None if self.template is None else template_to_label(self.template)


def read_ssv2_json(path: str | os.PathLike) -> list[SSv2Entry]:
  """Entries of an official SSv2 train/validation/test JSON."""
  entries = []
  labelled = None
  for line, obj in iter_json_array(path):
    if not isinstance(obj, dict):
      raise _fail(path, line, f"expected an object, got {type(obj).__name__}")
    if "id" not in obj:
      raise _fail(path, line, f"entry lacks key 'id': {obj}")
    has_template = "template" in obj
    if labelled is None:
      labelled = has_template
    elif has_template != labelled:
      raise _fail(path, line, f"entry lacks key 'template' (others have it): {obj}")
    placeholders = obj.get("placeholders", [])
    if not isinstance(placeholders, list):
      raise _fail(path, line, "'placeholders' must be a list")
    entries.append(
      SSv2Entry(
        str(obj["id"]),
        obj.get("template"),
        obj.get("label"),
        tuple(str(p) for p in placeholders),
        line,
      )
    )
  return entries


# ---------------------------------------------------------------------------------- SSv1
def read_ssv1_csv(
  path: str | os.PathLike, *, labelled: bool = True
) -> list[tuple[str, str | None, int]]:
  """(video_id, class name or None, line) from an SSv1 `id;label` (or test `id`) file."""
  out = []
  for lineno, raw in enumerate(_read_text(path).splitlines(), 1):
    line = raw.strip()
    if not line:
      continue
    parts = line.split(";", 1)
    if labelled and (len(parts) != 2 or not parts[1].strip()):
      raise _fail(path, lineno, f"expected 'id;label', got {line!r}")
    if not parts[0].strip():
      raise _fail(path, lineno, "empty video id")
    out.append((parts[0].strip(), parts[1].strip() if len(parts) == 2 else None, lineno))
  return out


# ---------------------------------------------------------------------------------- generic
def read_video_list(path: str | os.PathLike) -> list[tuple[str, str | None, int]]:
  """(relative path, label token or None, line) from a `path label` list file.

  A tab separates path and label if the line has one; otherwise the last run of spaces (so
  paths may contain spaces). A line with a single field has no label token.
  """
  out = []
  for lineno, raw in enumerate(_read_text(path).splitlines(), 1):
    line = raw.strip()
    if not line or line.startswith("#"):
      continue
    parts = line.split("\t") if "\t" in line else line.rsplit(None, 1)
    parts = [p.strip() for p in parts if p.strip()]
    if len(parts) == 1:
      out.append((parts[0], None, lineno))
    elif len(parts) == 2:
      out.append((parts[0], parts[1], lineno))
    else:
      raise _fail(path, lineno, f"expected 'path<TAB>label', got {len(parts)} tab-separated fields")
  return out
