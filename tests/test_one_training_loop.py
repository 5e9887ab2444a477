"""Issue 13 item 1: one training loop and one signal handler in src/mindvis.

Every module is parsed with `ast` (nothing is imported). A training loop is code that takes
gradients: a call of `.backward(...)` or of `torch.autograd.grad/backward`. A signal handler is
installed by `signal.signal(...)` (however `signal` was imported) or an event loop's
`add_signal_handler`. Each may appear in its one home only:
  training/engine.py   the loop every training stage runs on (stages give it a batch -> loss)
  utils/sigterm.py     SigtermHandler, which the engine's StopFlag and the tracker's job use
A stage that writes its own loop, or a module that installs its own handler, fails here:
it should give the engine hooks, or use SigtermHandler.

The embedded demo's judge (evaluation/judge_training.py) is a stage like the others: no exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mindvis"

LOOP_HOME = "training/engine.py"
SIGNAL_HOME = "utils/sigterm.py"


def _modules() -> dict[str, ast.Module]:
    return {path.relative_to(SRC).as_posix(): ast.parse(path.read_text(), filename=str(path))
            for path in sorted(SRC.rglob("*.py"))}


def _signal_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names bound to the signal module, names bound to signal.signal itself) in one module."""
    modules, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == "signal"}
        elif isinstance(node, ast.ImportFrom) and node.module == "signal":
            functions |= {alias.asname or alias.name for alias in node.names if alias.name == "signal"}
    return modules, functions


def _installs_a_handler(tree: ast.Module) -> list[int]:
    modules, functions = _signal_names(tree)
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "signal" and isinstance(f.value, ast.Name) \
                and f.value.id in modules:
            lines.append(node.lineno)
        elif isinstance(f, ast.Name) and f.id in functions:
            lines.append(node.lineno)
        elif isinstance(f, ast.Attribute) and f.attr == "add_signal_handler":
            lines.append(node.lineno)
    return lines


def _takes_gradients(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        f = node.func
        if f.attr == "backward":  # loss.backward(), scaler.scale(loss).backward(), torch.autograd.backward(...)
            lines.append(node.lineno)
        elif f.attr == "grad" and isinstance(f.value, ast.Attribute) and f.value.attr == "autograd":
            lines.append(node.lineno)
    return lines


def test_the_engine_is_the_only_training_loop():
    found = {name: lines for name, tree in _modules().items() if (lines := _takes_gradients(tree))}
    assert LOOP_HOME in found, "training/engine.py no longer takes gradients: where did the loop go?"
    others = {name: lines for name, lines in found.items() if name != LOOP_HOME}
    assert not others, (f"a second training loop (gradients taken at {others}): give the engine "
                        f"(mindvis.training.engine.run_loop) the stage's batch -> loss and hooks instead")


def test_sigterm_handler_is_installed_in_one_place():
    found = {name: lines for name, tree in _modules().items() if (lines := _installs_a_handler(tree))}
    assert set(found) == {SIGNAL_HOME}, (f"signal handlers installed at {found}: use "
                                         f"mindvis.utils.sigterm.SigtermHandler")


def test_the_scans_see_what_they_look_for():
    """The detectors themselves, on snippets written here: the patterns above are really caught."""
    loop = ast.parse("for x in data:\n    scaler.scale(model(x)).backward()\n    torch.autograd.grad(y, [w])\n")
    assert _takes_gradients(loop) == [2, 3]
    assert _takes_gradients(ast.parse("loss = model(x)\nopt.step()\n")) == []
    aliased = ast.parse("import signal as sg\nfrom signal import signal as install\n"
                        "sg.signal(sg.SIGTERM, f)\ninstall(15, f)\nloop.add_signal_handler(15, f)\n")
    assert _installs_a_handler(aliased) == [3, 4, 5]
    assert _installs_a_handler(ast.parse("import signal\nsignal.getsignal(signal.SIGTERM)\n")) == []
