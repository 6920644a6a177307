"""The CUDA handler (#21) compiles, on machines without a GPU: the handler
and its staging pool are host code against the CUDA runtime API, so a C++
compiler and the runtime's headers build them. The headers come from
$CUDA_HOME or /usr/local/cuda where a toolkit is installed, else from the
package registry's CUDA wheels (nvidia-cuda-runtime-cu12 for the runtime
headers and libcudart, nvidia-cuda-nvcc-cu12 for the crt/ headers they
include), unpacked into a temporary directory (JAX_PCCL_TEST_CUDA_FROM_WHEELS=1
takes that path where a toolkit is installed too). Compile-only: running the
handler needs a GPU (see docs/development.md).

Also here, with the default (CPU-only) build: lowering all_reduce for the
CUDA platform says how to get the handler instead of failing obscurely."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEELS = {"nvidia-cuda-runtime-cu12": "12.9.79", "nvidia-cuda-nvcc-cu12": "12.9.86"}


def toolkit_headers() -> tuple[list[str], str] | None:
    if os.environ.get("JAX_PCCL_TEST_CUDA_FROM_WHEELS"):  # the CI path on a machine with a toolkit
        return None
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and Path(root, "include", "cuda_runtime_api.h").exists() and \
                Path(root, "include", "crt", "host_defines.h").exists():
            libs = glob.glob(f"{root}/lib64/libcudart.so*")
            if libs:
                return [f"{root}/include"], sorted(libs)[0]
    return None


def wheel_headers(where: Path) -> tuple[list[str], str]:
    """The runtime's headers and libcudart, and the crt/ headers, from PyPI's wheels."""
    specs = [f"{name}=={version}" for name, version in WHEELS.items()]
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(where / "wheels"), *specs], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for wheel in (where / "wheels").glob("*.whl"):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if "/include/" in name or "/lib/libcudart.so" in name:
                    z.extract(name, where / "cuda")
    runtime = where / "cuda" / "nvidia" / "cuda_runtime"
    return ([str(runtime / "include"), str(where / "cuda" / "nvidia" / "cuda_nvcc" / "include")],
            str(next((runtime / "lib").glob("libcudart.so*"))))


def test_the_cuda_handler_compiles(tmp_path):
    found = toolkit_headers()
    include, cudart = found if found else wheel_headers(tmp_path)
    build = tmp_path / "build"
    cmake = shutil.which("cmake", path=os.path.dirname(sys.executable)) or "cmake"
    ninja = shutil.which("ninja", path=os.path.dirname(sys.executable)) or "ninja"
    configure = subprocess.run(
        [cmake, "-S", str(REPO), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
         f"-DPython_EXECUTABLE={sys.executable}", "-DJAX_PCCL_CUDA=ON",
         f"-DJAX_PCCL_CUDA_INCLUDE={';'.join(include)}", f"-DJAX_PCCL_CUDART={cudart}"],
        capture_output=True, text=True, timeout=600)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    assert "CUDA handler: headers" in configure.stdout
    built = subprocess.run([cmake, "--build", str(build), "--target", "pccl_cuda_handler"],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-2000:]
    objects = list(build.rglob("collective_cuda_handler.cc.o"))
    assert len(objects) == 1, objects
    symbols = subprocess.run(["nm", "-C", "--defined-only", str(objects[0])], capture_output=True,
                             text=True).stdout
    # The handler symbol (extern "C", what jax.ffi.register_ffi_target takes), defined.
    assert re.search(r"^[0-9a-f]+ T CollectiveCudaHandler$", symbols, re.M), symbols[-2000:]


def test_a_cpu_only_build_says_how_to_get_the_cuda_handler():
    import jax
    import jax.numpy as jnp

    import jax_pccl as pccl
    from jax_pccl import _pccl

    if _pccl.CUDA_BUILT:
        pytest.skip("this build has the CUDA handler")
    with pccl.Master() as master:
        comm = pccl.Communicator(master.address).connect()
        try:
            traced = jax.jit(lambda x: pccl.all_reduce(x, comm)).trace(jnp.ones(3))
            with pytest.raises(NotImplementedError, match="JAX_PCCL_CUDA=ON"):
                traced.lower(lowering_platforms=("cuda",))
            started = jax.jit(lambda x: pccl.all_reduce_wait(pccl.all_reduce_start(x, comm)))
            with pytest.raises(NotImplementedError, match="all_reduce only"):
                started.trace(jnp.ones(3)).lower(lowering_platforms=("cuda",))
            # The CPU path is untouched.
            assert float(jax.jit(lambda x: pccl.all_reduce(x, comm))(jnp.ones(3))[0]) == 1.0
        finally:
            comm.close()
