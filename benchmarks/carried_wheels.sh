# Sourced by the GPU scripts (from the repository root, with PY set): the GPU
# machine lacks `datasets` and its dill/multiprocess, so they travel as wheels
# in .whl (how to fetch them: gpu_wikitext2.sh) and are installed into
# /tmp/site, once per machine, before anything imports them.
if compgen -G ".whl/*.whl" >/dev/null && ! $PY -c "import datasets" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
