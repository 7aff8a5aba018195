// Stand-in for the header that a CUDA build of PyTorch generates from c10/cuda/impl/cuda_cmake_macros.h.in and the
// CPU wheel does not ship. Its only macro, C10_CUDA_BUILD_SHARED_LIBS, matters for Windows DLL exports alone, so an
// empty header compiles the same code. Only the compile-only check puts this directory on the include path.
#pragma once
