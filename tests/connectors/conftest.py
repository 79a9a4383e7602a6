"""Load every connector harness module so its fixture is available to the conformance suite.

The servers behind them (sshd, moto) are session fixtures of tests/conftest.py, shared by every test."""

import importlib
import pkgutil
from pathlib import Path

for _mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _mod.name.startswith("harness_"):
        _module = importlib.import_module(f"tests.connectors.{_mod.name}")
        globals().update({k: v for k, v in vars(_module).items() if k.endswith("_harness")})
