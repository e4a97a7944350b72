"""requirements.lock pins what setup.cfg asks for, at versions setup.cfg accepts."""

import configparser
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lock():
  pins = {}
  with open(os.path.join(ROOT, "requirements.lock")) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if not line:
        continue
      name, sep, version = line.partition("==")
      assert sep, f"requirements.lock: {line!r} is not an exact pin (name==version)"
      key = canonicalize_name(name)
      assert key not in pins, f"requirements.lock pins {name} twice"
      pins[key] = Version(version)
  return pins


def _declared():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  lines = cfg["options"]["install_requires"].splitlines()
  lines += cfg["options.extras_require"]["test"].splitlines()
  return [Requirement(l.split("#", 1)[0].strip()) for l in lines
          if l.split("#", 1)[0].strip()]


def test_lock_pins_every_declared_requirement_within_its_bounds():
  pins = _lock()
  declared = _declared()
  assert len(declared) >= 10
  for req in declared:
    key = canonicalize_name(req.name)
    assert key in pins, f"{req.name} is in setup.cfg but not pinned in requirements.lock"
    assert req.specifier.contains(pins[key]), (
        f"requirements.lock pins {req.name}=={pins[key]}, outside setup.cfg's {req.specifier}")


def test_lock_does_not_pin_seqbench_itself():
  assert "seqbench" not in _lock()
