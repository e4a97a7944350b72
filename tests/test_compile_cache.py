"""The persistent GPU autotune cache that the ``seqbench`` command turns on."""

import os
import subprocess
import sys

from seqbench import compile_cache as C

FLAG = C.AUTOTUNE_FLAG


def test_default_dir_follows_xdg_cache_home(tmp_path):
  env = {"XDG_CACHE_HOME": str(tmp_path)}
  assert C.with_autotune_cache(env) == f"{FLAG}={tmp_path}/seqbench/xla-autotune"


def test_flags_already_set_are_kept_and_the_cache_appended(tmp_path):
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "SEQBENCH_AUTOTUNE_CACHE": str(tmp_path / "atc")}
  flags = C.with_autotune_cache(env)
  assert flags == f"--xla_force_host_platform_device_count=4 {FLAG}={tmp_path}/atc"
  assert C.flag_dir(flags) == f"{tmp_path}/atc"


def test_a_cache_dir_in_xla_flags_wins_and_off_switches_it_off(tmp_path):
  mine = f"{FLAG}=/elsewhere"
  env = {"XLA_FLAGS": mine, "SEQBENCH_AUTOTUNE_CACHE": str(tmp_path)}
  assert C.with_autotune_cache(env) is None
  env = {"XLA_FLAGS": mine}
  assert C.enable(env) == "/elsewhere" and env["XLA_FLAGS"] == mine
  env = {"SEQBENCH_AUTOTUNE_CACHE": "off", "XDG_CACHE_HOME": str(tmp_path)}
  assert C.enable(env) is None and "XLA_FLAGS" not in env


def test_a_path_with_spaces_is_not_added():
  # XLA splits XLA_FLAGS on whitespace: such a path would break every flag after it.
  assert C.with_autotune_cache({"SEQBENCH_AUTOTUNE_CACHE": "/tmp/a b"}) is None


def test_state_counts_entries(tmp_path):
  assert C.state("") is None
  flags = f"{FLAG}={tmp_path}"
  assert C.state(flags) == {"dir": str(tmp_path), "entries": 0}
  (tmp_path / "one").write_text("x")
  assert C.state(flags)["entries"] == 1
  assert C.state(f"{FLAG}={tmp_path}/missing")["entries"] == 0


def test_installed_jaxlib_accepts_the_flag(tmp_path):
  # XLA aborts the process on a flag it does not know, so a jaxlib without
  # this one would break every `seqbench` command: compile something with it.
  env = {**os.environ, "XLA_FLAGS": f"{FLAG}={tmp_path}", "JAX_PLATFORMS": "cpu"}
  code = "import jax, jax.numpy as jnp; print(float(jax.jit(lambda x: x @ x)(jnp.eye(3)).sum()))"
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == "3.0"


def test_enable_makes_the_directory_and_skips_one_it_cannot_write(tmp_path):
  env = {"SEQBENCH_AUTOTUNE_CACHE": str(tmp_path / "new" / "atc")}
  assert C.enable(env) == str(tmp_path / "new" / "atc")
  assert (tmp_path / "new" / "atc").is_dir() and FLAG in env["XLA_FLAGS"]
  blocker = tmp_path / "file"
  blocker.write_text("x")  # a file where the directory would go
  env = {"SEQBENCH_AUTOTUNE_CACHE": str(blocker / "atc")}
  assert C.enable(env) is None and "XLA_FLAGS" not in env


def test_a_quote_in_xla_flags_does_not_break_the_command(tmp_path):
  flags = f"--xla_dump_to={tmp_path}/it's"
  assert C.flag_dir(flags) is None
  assert C.flag_dir(f"{flags} {FLAG}=/c") == "/c"
  out = subprocess.run([sys.executable, "-m", "seqbench", "list"], capture_output=True,
                       text=True, env={**os.environ, "XLA_FLAGS": flags}, check=False)
  assert out.returncode == 0 and "Traceback" not in out.stderr
