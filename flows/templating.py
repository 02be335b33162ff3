"""Templates in zap files: sandboxed Jinja2 that keeps native types.

A value that is exactly one expression (``"{{ trigger.count }}"``) renders to that expression's
own value, so a number stays a number and a list a list. Anything else (``"Hi {{ name }}"``)
renders to a string. Unlike Jinja's NativeEnvironment we never ``literal_eval`` text, so
``"+85291234567"`` stays a phone number string and does not become an int.

Templates are checked statically at load time (syntax, names, references, reaching for Python
internals) and run in Jinja's sandbox with strict undefined at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, islice
from typing import Any, cast

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from flows import template_budget as budget
from flows.errors import TemplateError

ROOT_NAMES = frozenset({"trigger", "steps", "zap", "run"})
"""What a template can read: the trigger payload, earlier steps' outputs, the zap, the run."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _finalize(value: Any) -> Any:
    # Native rendering hands values back untouched, so an undefined (or a sandbox refusal, which
    # Jinja models as an undefined) must be made to fail here rather than leak into the output.
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    elif isinstance(value, list | tuple):
        for item in value:
            _finalize(item)
    elif isinstance(value, dict):
        for item in value.values():
            _finalize(item)
    return value


def _concat(values: Iterable[Any]) -> Any:
    head = list(islice(values, 2))
    if not head:
        return ""
    if len(head) == 1:
        return head[0]
    return "".join(str(v) for v in chain(head, values))


class _Undefined(StrictUndefined):
    """Strict undefined whose message says which keys *were* there."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        obj, name = self._undefined_obj, self._undefined_name
        if isinstance(obj, dict) and name is not None:
            keys = ", ".join(map(str, obj)) or "nothing"
            return f"{name!r} is not there; available: {keys}"
        return str(super()._undefined_message)


class _BudgetedLoops(Extension):
    """Every ``{% for x in EXPR %}`` iterates ``_each(EXPR)``, which counts each iteration
    against the render's budget (``flows.template_budget``): a loop cannot run unbounded."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        tokens = iter(stream)
        last = None
        for token in tokens:
            yield token
            if not (token.test("name:for") and last is not None and last.type == "block_begin"):
                last = token
                continue
            for token in tokens:  # the loop's target, up to `in`
                yield token
                if token.test("name:in"):
                    break
            yield Token(token.lineno, "name", "_each")
            yield Token(token.lineno, "lparen", "(")
            depth = 0
            for token in tokens:
                if token.type in ("lparen", "lbracket", "lbrace"):
                    depth += 1
                elif token.type in ("rparen", "rbracket", "rbrace"):
                    depth -= 1
                at_end = token.type == "block_end" or (
                    depth == 0 and (token.test("name:if") or token.test("name:recursive"))
                )
                if at_end:
                    yield Token(token.lineno, "rparen", ")")
                    yield token
                    break
                yield token
            last = token


class _Namespace(Namespace):
    """``namespace()``, with every value stored in it held to the budget: it is how a loop
    accumulates (``{% set ns.s = ns.s ~ ns.s %}``)."""

    def __setitem__(self, name: str, value: Any) -> None:
        budget.tick()
        super().__setitem__(name, budget.checked(value, f"namespace value {name!r}"))


class _NativeSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = NativeCodeGenerator
    concat = staticmethod(_concat)  # type: ignore[assignment]
    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        # The sandbox stops attribute escapes but not `9**9**9` or `'x' * 10**9`.
        return budget.binop(operator_, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget.tick()
        return budget.checked(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def wrap_str_format(self, value: Any) -> Any:
        """``'…'.format(…)``: its widths are checked before it builds anything (Jinja >= 3.1.5
        routes every ``str.format`` of a template through this method)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = str(value.__self__)

        def checked_format(*args: Any, **kwargs: Any) -> Any:
            budget.check_widths(text, braces=True)
            return budget.checked(wrapped(*args, **kwargs), "a formatted string")

        return checked_format


ENV = _NativeSandbox(
    undefined=_Undefined,
    finalize=_finalize,
    autoescape=False,
    keep_trailing_newline=True,
    extensions=[_BudgetedLoops],
)
ENV.globals.update(
    _each=budget.each,
    namespace=_Namespace,
    lipsum=budget.budget_lipsum(cast(Callable[..., Any], ENV.globals["lipsum"])),
)
ENV.filters.update(budget.budget_filters(ENV.filters))


# --------------------------------------------------------------------------- static checks


@dataclass
class TemplateInfo:
    """What a template reads, found without running it."""

    step_refs: list[str] = field(default_factory=list)
    step_fields: list[tuple[str, ...]] = field(default_factory=list)
    """``steps.<id>.<field>…`` read with constant names: (id, field, deeper fields …)."""
    trigger_fields: list[str] = field(default_factory=list)
    unknown_names: list[str] = field(default_factory=list)
    unsafe: list[str] = field(default_factory=list)
    over_budget: list[str] = field(default_factory=list)
    """Constant expressions that would go over the render budget (``'x' * 10**9``)."""


def _subscript_name(node: nodes.Node) -> str | None:
    """`x.name` or `x['name']` → 'name'."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    return None


_UNSAFE_NAMES = frozenset(
    {"mro", "gi_frame", "gi_code", "cr_frame", "cr_code", "f_globals", "f_locals", "func_globals"}
)


def _steps_chain(node: nodes.Node) -> tuple[str, ...] | None:
    """``steps.a.b['c']`` → ('a', 'b', 'c'); None when not rooted at ``steps`` or a name along
    the way is computed (``steps.a[i]``)."""
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        name = _subscript_name(node)
        if name is None:
            return None
        parts.append(name)
        node = node.node
    if isinstance(node, nodes.Name) and node.name == "steps" and len(parts) >= 2:
        return tuple(reversed(parts))
    return None


_FOLDABLE = (nodes.Mul, nodes.Pow, nodes.Add, nodes.Mod)


def _fold(node: nodes.Node) -> Any:
    """A constant expression's value, computed under the budget's checks (never building what
    they refuse); raises ``nodes.Impossible`` when the expression is not constant."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.Neg):
        return -_fold(node.node)
    if isinstance(node, _FOLDABLE):
        return budget.binop(node.operator, _fold(node.left), _fold(node.right))
    raise nodes.Impossible()


def _over_budget(node: nodes.Node) -> str | None:
    try:
        if isinstance(node, _FOLDABLE):
            _fold(node)
        elif isinstance(node, nodes.Filter) and node.name in ("center", "indent") and node.args:
            width = node.args[0]
            if isinstance(width, nodes.Const) and isinstance(width.value, int | float):
                budget.check_size(int(width.value), f"a {node.name}ed string")
        elif (
            isinstance(node, nodes.Filter)
            and node.name == "format"
            and isinstance(node.node, nodes.Const)
            and isinstance(node.node.value, str)
        ):
            budget.check_widths(node.node.value)
    except budget.OverBudget as exc:
        return str(exc)
    except Exception:  # not constant, or an error the run will report with its data
        return None
    return None


def _is_unsafe_name(name: str) -> bool:
    # Dunders are how templates escape to Python internals. A single leading underscore is
    # ordinary JSON (CINNOX's `_id`); Jinja's sandbox still refuses such *attributes* at run time.
    return name.startswith("__") or name in _UNSAFE_NAMES


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


@lru_cache(maxsize=4096)
def inspect_source(source: str) -> TemplateInfo:
    """Parse a template and report what it reads; raises ``TemplateSyntaxError`` if it can't."""
    ast = ENV.parse(source)
    info = TemplateInfo()
    assigned = {n.name for n in _walk(ast) if isinstance(n, nodes.Name) and n.ctx in ("store",)}
    for node in _walk(ast):
        if (
            isinstance(node, nodes.Name)
            and node.ctx == "load"
            and node.name not in ROOT_NAMES | assigned
            and node.name not in ENV.globals
        ):
            info.unknown_names.append(node.name)
        problem = _over_budget(node)
        if problem is not None and problem not in info.over_budget:
            info.over_budget.append(problem)
        name = _subscript_name(node)
        if name is not None and _is_unsafe_name(name):
            info.unsafe.append(name)
        if (
            isinstance(node, nodes.Filter)
            and node.name == "attr"
            and any(isinstance(a, nodes.Const) and _is_unsafe_name(str(a.value)) for a in node.args)
        ):
            info.unsafe.append(str(node.args[0].value))  # type: ignore[attr-defined]
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            chain = _steps_chain(node)
            if chain is not None:
                info.step_fields.append(chain)
        if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name):
            if name is None:
                continue
            if node.node.name == "steps":
                info.step_refs.append(name)
            elif node.node.name == "trigger":
                info.trigger_fields.append(name)
    return info


def expression_source(condition: str) -> str:
    """A condition is one expression, written bare or as ``{{ … }}``."""
    text = condition.strip()
    if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
        return text[2:-2].strip()
    return text


def condition_template(condition: str) -> str:
    return "{{ (" + expression_source(condition) + ") }}"


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=4096)
def _compile(source: str) -> Any:
    return ENV.from_string(source)


def render_value(value: Any, context: dict[str, Any], path: str = "") -> Any:
    """Render every template inside ``value`` (nested dicts and lists too) against ``context``,
    all of them under one budget (``flows.template_budget``)."""
    with budget.spending():
        return _render(value, context, path)


def _render(value: Any, context: dict[str, Any], path: str) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, context, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    if not is_template(value):
        return value
    try:
        return budget.checked(_compile(value).render(context), "the rendered value")
    except SecurityError as exc:
        raise TemplateError(f"{path}: refused by the template sandbox: {exc}") from None
    except UndefinedError as exc:
        raise TemplateError(f"{path}: {exc} (in {value!r})") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{path}: template syntax error: {exc.message}") from None
    except Exception as exc:  # a filter or operator failed on the data it got
        raise TemplateError(f"{path}: {type(exc).__name__}: {exc} (in {value!r})") from None


def evaluate_condition(condition: str, context: dict[str, Any], path: str) -> bool:
    return bool(render_value(condition_template(condition), context, path))
