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
    # The handler symbols (extern "C", what jax.ffi.register_ffi_target takes), defined.
    expected = {"collective_cuda_handler.cc.o": ["CollectiveCudaHandler"],
                "all_reduce_async_cuda_handler.cc.o": ["AllReduceStartCudaHandler",
                                                       "AllReduceWaitBindCudaHandler",
                                                       "AllReduceWaitCudaHandler"]}
    for object_name, handlers in expected.items():
        objects = list(build.rglob(object_name))
        assert len(objects) == 1, objects
        symbols = subprocess.run(["nm", "-C", "--defined-only", str(objects[0])],
                                 capture_output=True, text=True).stdout
        for handler in handlers:
            assert re.search(rf"^[0-9a-f]+ T {handler}$", symbols, re.M), symbols[-2000:]
    # The staging pipeline they share is the one test_staged_leaves runs.
    assert len(list(build.rglob("staged_leaves.cc.o"))) == 1


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
            with pytest.raises(NotImplementedError, match="all_reduce_start on a CUDA device.*"
                                                          "JAX_PCCL_CUDA=ON"):
                started.trace(jnp.ones(3)).lower(lowering_platforms=("cuda",))
            # The CPU path is untouched.
            assert float(jax.jit(lambda x: pccl.all_reduce(x, comm))(jnp.ones(3))[0]) == 1.0
        finally:
            comm.close()


def test_with_the_cuda_handler_start_and_wait_lower_to_its_calls(monkeypatch):
    """What a CUDA build lowers (the CUDA_BUILT switch is all that differs
    in Python): start, wait_bind and wait as the CPU has them, in program
    order, with the attributes their CUDA handlers bind
    (ffi/xla/cuda/all_reduce_async_cuda_handler.cc); all_reduce as one call."""
    import jax
    import jax.numpy as jnp

    import jax_pccl as pccl
    from jax_pccl import _pccl

    monkeypatch.setattr(_pccl, "CUDA_BUILT", True)
    with pccl.Master() as master:
        comm = pccl.Communicator(master.address).connect()
        try:
            def step(x, y):
                h = pccl.all_reduce_start({"x": x, "y": y}, comm, op="avg")
                z = jnp.sin(x) * 2  # compute between start and wait
                return pccl.all_reduce_wait(h), pccl.all_reduce(z, comm)

            text = jax.jit(step).trace(jnp.ones(3), jnp.ones((2, 2), jnp.bfloat16)).lower(
                lowering_platforms=("cuda",)).as_text()
            calls = re.findall(r'custom_call @(jax_pccl_\w+)\((.*?)\).*?\{(.*?)\}', text)
            targets = [name for name, _, _ in calls]
            assert targets == ["jax_pccl_all_reduce_start", "jax_pccl_all_reduce_wait_bind",
                               "jax_pccl_all_reduce_wait", "jax_pccl_collective"], text
            sites = [re.search(r"site = (\d+)", attrs).group(1) for name, _, attrs in calls
                     if name.startswith("jax_pccl_all_reduce_wait")]
            assert len(sites) == 2 and sites[0] == sites[1], sites
        finally:
            comm.close()
