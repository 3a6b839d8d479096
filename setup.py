"""Builds ``dsconv_ext._C``.

* C++ CPU sources (``csrc/*.cpp``, ``csrc/cpu/*.cpp``) are always compiled.
* CUDA sources (``csrc/cuda/*.cu``) are compiled when ``nvcc`` is found (``CUDA_HOME`` or
  ``PATH``) or ``DSCONV_EXT_FORCE_CUDA=1``; never decided by ``torch.cuda.is_available()``,
  so a GPU-less build machine still produces a CUDA-enabled wheel.
* ``DSCONV_EXT_SKIP_BUILD=1`` builds nothing: the package then runs on the reference backend.
"""

import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


def _nvcc_found() -> bool:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        return True
    return shutil.which("nvcc") is not None


def _sources(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions_and_cmdclass():
    if _flag("DSCONV_EXT_SKIP_BUILD"):
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpu_sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp")
    cuda_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    with_cuda = bool(cuda_sources) and (_flag("DSCONV_EXT_FORCE_CUDA") or _nvcc_found())
    debug = _flag("DSCONV_EXT_DEBUG")
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags += ["-fopenmp"]
    define_macros = [("Py_LIMITED_API", "0x03090000")]
    extra = {"cxx": cxx_flags}
    if with_cuda:
        define_macros.append(("DSCONV_EXT_WITH_CUDA", None))
        extra["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo"]
        ext = CUDAExtension(
            "dsconv_ext._C",
            cpu_sources + cuda_sources,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
            py_limited_api=True,
        )
    else:
        ext = CppExtension(
            "dsconv_ext._C",
            cpu_sources,
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
            define_macros=define_macros,
            py_limited_api=True,
        )
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions_and_cmdclass()

setup(
    packages=find_packages(include=["dsconv_ext", "dsconv_ext.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
