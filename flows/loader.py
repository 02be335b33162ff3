"""Loading zap files, with every problem reported as ``file:line:column: field.path: message``.

Checks, in order: YAML syntax; the zap schema (``model``); that the trigger and every action
exist in an installed app; the trigger's options (a schedule's cron, a polling interval …); each
step's input against its action's input model (values that are templates are checked after
rendering, at run time); every template's syntax, the names it reads, the steps it references
(which must exist and run earlier) and the sandbox rules. The ``on_failure`` steps are checked as
the steps of the zap they run as, whose trigger is ``builtin.zap_failed``.
All problems of all files are collected; nothing stops at the first.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError
from pydantic import BaseModel, ValidationError

from connectors import registry
from flows import templating, yamlsource
from flows.errors import Problem, ZapValidationError
from flows.model import (
    UNION_TAGS,
    ActionStep,
    Branch,
    PathsStep,
    StepPolicy,
    TriggerSpec,
    Zap,
)
from flows.yamlsource import SourceMap

ZAP_SUFFIXES = (".yaml", ".yml")
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedZap:
    zap: Zap
    file: Path


def format_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def allowed_fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


class _Collector:
    """Turns findings into located ``Problem``s for one file."""

    def __init__(self, file: str, smap: SourceMap) -> None:
        self.file, self.smap = file, smap
        self.problems: list[Problem] = []
        self.rejected: set[Loc] = set()
        """Locations the schema rejected; later checks leave them alone."""

    def relocate(self, loc: Loc) -> Loc:
        """Where a finding at ``loc`` is in the file (checks of derived data move it)."""
        return loc

    def add(self, loc: Loc, message: str, *, at_key: bool = False, offset: int = 0) -> None:
        loc = self.relocate(loc)
        pos = self.smap.key(loc) if at_key else self.smap.value(loc)
        self.problems.append(
            Problem(self.file, pos.line + offset, pos.column, format_path(loc), message)
        )

    def pydantic(self, exc: ValidationError, prefix: Loc, model_at: Any, skip: Any = None) -> None:
        for err in exc.errors(include_url=False):
            loc = prefix + tuple(p for p in err["loc"] if p not in UNION_TAGS)
            if skip is not None and skip(loc, err):
                continue
            self.rejected.add(loc)
            kind = err["type"]
            if kind == "extra_forbidden":
                model = model_at(loc[:-1])
                allowed = allowed_fields(model) if model else []
                hint = registry.suggest(str(loc[-1]), allowed)
                listing = f"; allowed: {', '.join(allowed)}" if allowed else ""
                self.add(loc, f"unknown field {loc[-1]!r}{hint}{listing}", at_key=True)
            elif kind == "missing":
                self.add(loc, f"required field {loc[-1]!r} is missing")
            else:
                self.add(loc, _friendly(err))


class _OnFailureCollector(_Collector):
    """Findings of the ``on_failure`` steps, checked as the steps of their own zap (``steps``
    there), reported at ``on_failure`` in the file."""

    def __init__(self, out: _Collector) -> None:
        super().__init__(out.file, out.smap)
        self.problems = out.problems

    def relocate(self, loc: Loc) -> Loc:
        return ("on_failure", *loc[1:]) if loc[:1] == ("steps",) else loc


def _friendly(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        if "A-Za-z_" in pattern:
            return "must be a name of letters, digits and _ that does not start with a digit"
        if "a-z0-9][a-z0-9_-]" in pattern:
            return (
                "must be lowercase letters, digits, - and _ (up to 63), "
                "starting with a letter or digit"
            )
        if "a-z0-9][a-z0-9-]" in pattern:
            return "a connection name is lowercase letters, digits and - (up to 40)"
        if r"\." in pattern:
            return f"{err['input']!r} is not of the form app.action_name (e.g. cinnox.send_sms)"
    shown = repr(err.get("input"))
    if "input" not in err or isinstance(err["input"], dict | list) or shown in msg:
        return msg
    return f"{msg} (got {shown})"


def _structure_model(loc: Loc, data: Any) -> type[BaseModel] | None:
    """The zap-language model that describes the mapping at ``loc``."""
    model: Any = Zap
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
        if (model in (Zap, Branch) and part == "steps") or (model is Zap and part == "on_failure"):
            model = "steps"
        elif model == "steps":
            model = PathsStep if isinstance(node, dict) and "paths" in node else ActionStep
        elif model is PathsStep and part == "paths":
            model = "branches"
        elif model == "branches":
            model = Branch
        elif model is Zap and part in ("trigger", "defaults"):
            model = TriggerSpec if part == "trigger" else StepPolicy
        else:
            return None
    return model if isinstance(model, type) else None


def _templated_locs(value: Any, loc: Loc = ()) -> Iterable[tuple[Loc, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _templated_locs(v, (*loc, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _templated_locs(v, (*loc, i))
    elif templating.is_template(value):
        yield loc, value


# --------------------------------------------------------------------------- semantic checks


def _walk_raw(
    steps: Any, path: Loc, before: tuple[str, ...]
) -> Iterable[tuple[dict, Loc, tuple[str, ...]]]:
    """Like ``Zap.walk`` but over the file's raw data, so checks run even when the schema fails."""
    visible = before
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        yield step, (*path, i), visible
        branches = step.get("paths")
        for b, branch in enumerate(branches if isinstance(branches, list) else []):
            if isinstance(branch, dict):
                yield from _walk_raw(branch.get("steps"), (*path, i, "paths", b, "steps"), visible)
        if isinstance(step.get("id"), str):
            visible = (*visible, step["id"])


class _ZapChecker:
    """Checks that need the installed apps, over raw data; skips places the schema rejected."""

    def __init__(self, data: dict[str, Any], out: _Collector, rejected: set[Loc]) -> None:
        self.data, self.out, self.rejected = data, out, rejected
        self.all_ids: dict[str, Loc] = {}
        self.step_actions: dict[str, Any] = {}
        self.trigger_fields: list[str] | None = None
        self.trigger_name = ""
        self.trigger_app: str | None = None
        self.trigger_connection: Any = None

    def _ok(self, loc: Loc, value: Any, kind: type = str) -> bool:
        return isinstance(value, kind) and loc not in self.rejected

    def run(self) -> None:
        self._check_trigger()
        conditions = self.data.get("filter")
        for i, cond in enumerate(conditions if isinstance(conditions, list) else []):
            if self._ok(("filter", i), cond):
                self._check_template(templating.condition_template(cond), ("filter", i), ())
        scopes = list(_walk_raw(self.data.get("steps"), ("steps",), ()))
        for step, path, _ in scopes:
            step_id = step.get("id")
            if not isinstance(step_id, str):
                continue
            if step_id in self.all_ids:
                first = format_path(self.all_ids[step_id])
                self.out.add((*path, "id"), f"step id {step_id!r} is already used by {first}")
            else:
                self.all_ids[step_id] = path
                self.step_actions[step_id] = step.get("action")
        for step, path, visible in scopes:
            own = step.get("id") if isinstance(step.get("id"), str) else None
            if self._ok((*path, "when"), step.get("when")):
                cond = templating.condition_template(step["when"])
                self._check_template(cond, (*path, "when"), visible, own)
            if "paths" in step:
                branches = step["paths"] if isinstance(step["paths"], list) else []
                for b, branch in enumerate(branches):
                    loc = (*path, "paths", b, "when")
                    if isinstance(branch, dict) and self._ok(loc, branch.get("when")):
                        cond = templating.condition_template(branch["when"])
                        self._check_template(cond, loc, visible)
            else:
                self._check_action_step(step, path, visible, own)

    def _check_trigger(self) -> None:
        spec = self.data.get("trigger")
        if not isinstance(spec, dict):
            return
        app, event = spec.get("app"), spec.get("event")
        if not (self._ok(("trigger", "app"), app) and self._ok(("trigger", "event"), event)):
            return
        assert isinstance(app, str) and isinstance(event, str)
        try:
            trigger = registry.trigger(app, event)
        except registry.UnknownName as exc:
            field = "app" if app not in registry.apps() else "event"
            self.out.add(("trigger", field), str(exc))
            return
        self.trigger_name = trigger.key
        self.trigger_app = app
        self.trigger_connection = spec.get("connection")
        owner = registry.app(app)
        if owner.connection_required and self.trigger_connection is None:
            self.out.add(
                ("trigger",),
                f"app {app!r} needs a connection: add `connection: <name>` "
                "(`zapflow connections` lists yours)",
            )
        elif owner.connection is None and self.trigger_connection is not None:
            self.out.add(("trigger", "connection"), f"app {app!r} takes no connection")
        payload = trigger.payload_model
        samples = spec.get("samples")
        for i, sample in enumerate(samples if isinstance(samples, list) else []):
            if self._ok(("trigger", "samples", i), sample, dict):
                try:
                    payload.model_validate(sample)
                except ValidationError as exc:
                    self.out.pydantic(exc, ("trigger", "samples", i), lambda _loc: payload)
        if payload.model_config.get("extra") != "allow":
            self.trigger_fields = allowed_fields(payload)
        options, model = spec.get("options", {}), trigger.options_model
        if model is not None and self._ok(("trigger", "options"), options, dict):
            try:
                model.model_validate(options)
            except ValidationError as exc:
                self.out.pydantic(exc, ("trigger", "options"), lambda _loc: model)

    def _check_action_step(
        self, step: dict[str, Any], path: Loc, visible: tuple[str, ...], own: str | None
    ) -> None:
        action = None
        if self._ok((*path, "action"), step.get("action")):
            try:
                action = registry.action(step["action"])
            except registry.UnknownName as exc:
                self.out.add((*path, "action"), str(exc))
            else:
                self._check_connection(step, path, action.app)
        raw_input = step.get("input", {})
        if not isinstance(raw_input, dict) or (*path, "input") in self.rejected:
            return
        templated = dict(_templated_locs(raw_input))
        for loc, source in templated.items():
            self._check_template(source, (*path, "input", *loc), visible, own)
        if action is None:
            return
        prefix = (*path, "input")

        def skip(loc: Loc, err: Any) -> bool:
            # Templated values are checked once rendered, at run time.
            rel = loc[len(prefix) :]
            return templating.is_template(err.get("input")) or any(
                rel[: len(t)] == t for t in templated
            )

        try:
            action.input_model.model_validate(raw_input)
        except ValidationError as exc:
            self.out.pydantic(exc, prefix, lambda _loc: action.input_model, skip)

    def _check_connection(self, step: dict[str, Any], path: Loc, app_name: str) -> None:
        owner = registry.app(app_name)
        named = step.get("connection")
        if owner.connection is None:
            if named is not None:
                self.out.add((*path, "connection"), f"app {app_name!r} takes no connection")
            return
        trigger_has_one = app_name == self.trigger_app and self.trigger_connection
        if named is None and owner.connection_required and not trigger_has_one:
            self.out.add(
                (*path, "action"),
                f"app {app_name!r} needs a connection: add `connection: <name>` to this step"
                + (" or the trigger" if app_name == self.trigger_app else "")
                + " (`zapflow connections` lists yours)",
            )

    def _check_template(
        self, source: str, loc: Loc, visible: tuple[str, ...], own_id: str | None = None
    ) -> None:
        try:
            info = templating.inspect_source(source)
        except TemplateSyntaxError as exc:
            self.out.add(loc, f"template syntax error: {exc.message}", offset=(exc.lineno or 1) - 1)
            return
        for name in dict.fromkeys(info.unsafe):
            self.out.add(
                loc,
                f"template reaches for Python internals ({name!r}), which the sandbox refuses; "
                f"templates may read only {', '.join(sorted(templating.ROOT_NAMES))} "
                "and their fields",
            )
        for problem in info.over_budget:
            self.out.add(loc, f"template is over its budget: {problem}")
        for name in dict.fromkeys(info.unknown_names):
            hint = registry.suggest(name, templating.ROOT_NAMES)
            self.out.add(
                loc,
                f"unknown name {name!r} in template{hint}; templates can read "
                f"{', '.join(sorted(templating.ROOT_NAMES))}",
            )
        readable = set()
        for ref in dict.fromkeys(info.step_refs):
            problem = self._step_ref_problem(ref, visible, own_id)
            if problem:
                self.out.add(loc, problem)
            else:
                readable.add(ref)
        field_problems = [
            self._output_field_problem(chain) for chain in info.step_fields if chain[0] in readable
        ]
        for problem in dict.fromkeys(p for p in field_problems if p):
            self.out.add(loc, problem)
        if self.trigger_fields is not None:
            for name in dict.fromkeys(info.trigger_fields):
                if name not in self.trigger_fields:
                    hint = registry.suggest(name, self.trigger_fields)
                    self.out.add(
                        loc,
                        f"trigger {self.trigger_name} has no field "
                        f"{name!r}{hint}; its fields: {', '.join(self.trigger_fields)}",
                    )

    def _output_field_problem(self, chain: tuple[str, ...]) -> str:
        """A field read from an earlier step's output that its action's output model does not
        have. Checked as deep as the output is a model; a model open to extra keys (an app's
        reply passed on whole) is only held to the case and spelling of the fields it names."""
        ref, *names = chain
        try:
            action = registry.action(str(self.step_actions.get(ref)))
        except registry.UnknownName:
            return ""  # reported at the step itself
        model: Any = action.output_model
        for depth, name in enumerate(names):
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                return ""
            fields = {f.alias or n: f for n, f in model.model_fields.items()}
            if name in fields:
                model = _model_inside(fields[name].annotation)
                continue
            if model.model_config.get("extra") == "allow":
                same = [f for f in fields if _loose(f) == _loose(name)]
                if not same:
                    return ""  # may be a key the app added: passed on as it came
            dotted = ".".join(["steps", ref, *names[: depth + 1]])
            hint = registry.suggest(name, list(fields))
            return (
                f"{dotted}: step {ref!r} ({action.key}) has no output field {name!r}{hint}; "
                f"its output fields: {', '.join(fields)}"
            )
        return ""

    def _step_ref_problem(self, ref: str, visible: tuple[str, ...], own_id: str | None) -> str:
        if ref in visible:
            return ""
        if ref == own_id:
            return f"step {ref!r} cannot read its own output"
        if ref not in self.all_ids:
            hint = registry.suggest(ref, list(self.all_ids))
            known = ", ".join(visible) or "none yet"
            return f"there is no step {ref!r}{hint}; steps this one can read: {known}"
        where = format_path(self.all_ids[ref])
        if "paths" in self.all_ids[ref][:-1]:
            return f"step {ref!r} ({where}) is inside a path branch that may not run before this"
        return f"step {ref!r} ({where}) runs later; a step can read only steps before it"


def _loose(name: str) -> str:
    return name.replace("_", "").lower()


def _model_inside(annotation: Any) -> Any:
    """The model a field holds (``Model``, ``Model | None``), else None: deeper names unchecked."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [
        a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    only_none = all(a is type(None) or a in models for a in typing.get_args(annotation))
    return models[0] if len(models) == 1 and only_none else None


# --------------------------------------------------------------------------- entry points


def load_zap_text(text: str, file: str = "<zap>") -> Zap:
    """Parse and check one zap; raise ``ZapValidationError`` listing every problem."""
    try:
        data, smap = yamlsource.load(text)
    except yamlsource.YamlProblem as exc:
        raise ZapValidationError([Problem(file, exc.line, exc.column, "", exc.message)]) from None
    out = _Collector(file, smap)
    if not isinstance(data, dict):
        out.add((), "a zap file must be a mapping with zap, trigger and steps")
        raise ZapValidationError(out.problems)
    zap: Zap | None = None
    try:
        zap = Zap.model_validate(data)
    except ValidationError as exc:
        out.pydantic(exc, (), lambda loc: _structure_model(loc, data))
    _ZapChecker(data, out, out.rejected).run()
    if isinstance(data.get("on_failure"), list):
        # Checked as the steps of the zap they run as: its trigger is the failure.
        trigger = {"app": "builtin", "event": "zap_failed"}
        failure = {"trigger": trigger, "steps": data["on_failure"]}
        moved = {("steps", *loc[1:]) for loc in out.rejected if loc[:1] == ("on_failure",)}
        _ZapChecker(failure, _OnFailureCollector(out), moved).run()
    if out.problems or zap is None:
        raise ZapValidationError(out.problems)
    return zap


def load_zap_file(path: Path | str) -> LoadedZap:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZapValidationError([Problem(str(path), 1, 1, "", f"cannot read: {exc}")]) from None
    return LoadedZap(load_zap_text(text, str(path)), path)


def find_zap_files(paths: Iterable[Path | str]) -> list[Path]:
    """Zap files named directly, and every *.yaml / *.yml under directories named."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in ZAP_SUFFIXES))
        else:
            found.append(path)
    return found


def load_all(paths: Iterable[Path | str]) -> tuple[list[LoadedZap], list[Problem]]:
    """Every zap under ``paths`` that is valid, and every problem of those that are not."""
    loaded: list[LoadedZap] = []
    problems: list[Problem] = []
    for file in find_zap_files(paths):
        try:
            loaded.append(load_zap_file(file))
        except ZapValidationError as exc:
            problems.extend(exc.problems)
    seen: dict[str, LoadedZap] = {}
    for item in loaded:
        if item.zap.zap in seen:
            problems.append(
                Problem(
                    str(item.file),
                    1,
                    1,
                    "zap",
                    f"zap id {item.zap.zap!r} is also used by {seen[item.zap.zap].file}",
                )
            )
        seen.setdefault(item.zap.zap, item)
    return loaded, sorted(problems)
