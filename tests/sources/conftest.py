"""Load every source harness module so its fixture is available to the source conformance suite."""

import importlib
import pkgutil
from pathlib import Path

for _mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _mod.name.startswith("harness_"):
        _module = importlib.import_module(f"tests.sources.{_mod.name}")
        globals().update({k: v for k, v in vars(_module).items() if k.endswith("_harness")})
