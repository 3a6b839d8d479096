"""Builds ``dsconv_ext._C`` (CPU kernels) and, where a CUDA toolkit is found, ``dsconv_ext._C_cuda``.

* C++ CPU sources (``csrc/*.cpp``, ``csrc/cpu/*.cpp``) are always compiled into ``_C``.
* CUDA sources (``csrc/cuda/*.cu``, ``csrc/cuda/*.cpp``) are compiled into a separate module
  ``_C_cuda``, so a CPU-only install's ``_C`` never depends on the CUDA libraries. Built when
  ``nvcc`` is found, or always with ``DSCONV_EXT_FORCE_CUDA=1`` (which fails loudly when no
  toolkit is found); never decided by ``torch.cuda.is_available()``, so a GPU-less build
  machine still produces the CUDA kernels. The toolkit root is ``CUDA_HOME`` / ``CUDA_PATH``
  when set, else derived from the ``nvcc`` on ``PATH`` (following wrapper scripts through
  ``nvcc --dryrun``'s ``TOP=``), else ``/usr/local/cuda``; it is exported as ``CUDA_HOME`` for
  torch's build helpers. Architectures: ``TORCH_CUDA_ARCH_LIST`` (e.g. ``"8.0;9.0"``), else
  torch's default (the visible GPUs, or all it supports).
* ``DSCONV_EXT_SKIP_BUILD=1`` builds nothing: the package then runs on the reference backend.
* ``DSCONV_EXT_CPU_ISA=auto|avx512|avx2|generic`` picks the vector ISA of the CPU kernels. The
  kernels use ATen's ``at::vec::Vectorized``, so one source becomes AVX-512 or AVX2 code; ``auto``
  (default) takes the best the build machine has. Build with ``avx2`` or ``generic`` for a
  binary that must run on older CPUs than the one it is built on.
* ``DSCONV_EXT_DEBUG=1``: ``-O0 -g`` host code (and ``-G`` device code).
"""

import glob
import os
import platform
import shutil
import subprocess

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _toolkit_root_of(nvcc: str):
    """The toolkit root of an ``nvcc`` executable, which may be a wrapper script elsewhere."""
    real = os.path.realpath(nvcc)
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
        for line in (out.stdout + out.stderr).splitlines():
            line = line.lstrip("#$ ").strip()
            if line.startswith("TOP="):
                top = os.path.realpath(line[len("TOP="):].strip())
                if os.path.exists(os.path.join(top, "bin", "nvcc")):
                    return top
    except (OSError, subprocess.SubprocessError):
        pass
    root = os.path.dirname(os.path.dirname(real))
    if os.path.exists(os.path.join(root, "include", "cuda_runtime.h")):
        return root
    return None


def _cuda_home():
    """The CUDA toolkit root, or None when there is no toolkit."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(name)
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return root
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = _toolkit_root_of(nvcc)
        if root:
            return root
    if os.path.exists("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda"
    return None


def _cpu_flags_of_this_machine() -> set:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "generic": [],
}


def _cpu_isa_flags() -> list:
    isa = os.environ.get("DSCONV_EXT_CPU_ISA", "auto").strip().lower()
    if isa not in ("auto", *_ISA_FLAGS):
        raise ValueError(f"DSCONV_EXT_CPU_ISA: expected auto, avx512, avx2 or generic, got {isa!r}")
    if isa == "auto":
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return []
        flags = _cpu_flags_of_this_machine()
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            isa = "avx512"
        elif {"avx2", "fma", "f16c"} <= flags:
            isa = "avx2"
        else:
            isa = "generic"
    print(f"dsconv_ext: building CPU kernels for {isa}")
    return _ISA_FLAGS[isa]


def _sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


# Ampere and Hopper data-centre GPUs, what the CUDA kernels are tuned for.
_ARCHES_WITHOUT_VISIBLE_GPUS = "8.0;9.0"


def _default_arch_list_without_gpus() -> None:
    """torch derives the architectures from the visible GPUs when TORCH_CUDA_ARCH_LIST is unset,
    and fails (an IndexError in _get_cuda_arch_flags) when there are none: a GPU-less build
    machine gets sm_80 and sm_90 instead."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        return
    import torch

    if torch.cuda.device_count() == 0:
        os.environ["TORCH_CUDA_ARCH_LIST"] = _ARCHES_WITHOUT_VISIBLE_GPUS


def _extensions_and_cmdclass():
    if _flag("DSCONV_EXT_SKIP_BUILD"):
        return [], {}
    cuda_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    cuda_home = _cuda_home() if cuda_sources else None
    if _flag("DSCONV_EXT_FORCE_CUDA"):
        if not cuda_sources:
            raise RuntimeError("DSCONV_EXT_FORCE_CUDA=1 but there are no sources under csrc/cuda")
        if cuda_home is None:
            raise RuntimeError(
                "DSCONV_EXT_FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the toolkit root "
                "or put nvcc on PATH"
            )
    with_cuda = cuda_home is not None
    if with_cuda:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported; its own guess from a
        # wrapper nvcc on PATH can be the wrong directory.
        os.environ["CUDA_HOME"] = cuda_home
        _default_arch_list_without_gpus()
        print(f"dsconv_ext: building CUDA kernels with the toolkit in {cuda_home} for "
              f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST', '(the visible GPUs)')}")
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpu_sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    debug = _flag("DSCONV_EXT_DEBUG")
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    extensions = [
        CppExtension(
            "dsconv_ext._C",
            cpu_sources,
            extra_compile_args={"cxx": cxx_flags + ["-fopenmp"] + _cpu_isa_flags()},
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
            py_limited_api=True,
        )
    ]
    if with_cuda:
        nvcc_flags = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]
        if debug:
            nvcc_flags = ["-O0", "-G", "--expt-relaxed-constexpr"]
        extensions.append(
            CUDAExtension(
                "dsconv_ext._C_cuda",
                cuda_sources,
                extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
                define_macros=define_macros,
                py_limited_api=True,
            )
        )
    return extensions, {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions_and_cmdclass()

setup(
    packages=find_packages(include=["dsconv_ext", "dsconv_ext.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
