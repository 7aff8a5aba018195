# CUDA sources and target settings, shared by the extension build (top-level CMakeLists.txt) and the compile-only
# check (compile_check/), so the check compiles the kernels exactly as the real build does.
#
# The kernels (*.cu) include no ATen headers and compile with nvcc in seconds; their host side (*.cpp) includes
# ATen and c10/cuda and compiles with the C++ compiler, which also needs the CUDA toolkit's headers.
file(GLOB INSPO_CUDA_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_LIST_DIR}/*.cu" "${CMAKE_CURRENT_LIST_DIR}/*.cpp")
get_filename_component(INSPO_CSRC_DIR "${CMAKE_CURRENT_LIST_DIR}/../csrc" ABSOLUTE)
set(INSPO_CUDA_ARCHITECTURES "80;90" CACHE STRING "GPU architectures of the CUDA kernels (CMake CUDA_ARCHITECTURES)")

function(inspo_cuda_settings target)
  # The shared CUDA runtime, as torch uses: one runtime instance in the process rather than a static copy of our own.
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES "${INSPO_CUDA_ARCHITECTURES}" CUDA_STANDARD 17
                                             CUDA_STANDARD_REQUIRED ON CUDA_RUNTIME_LIBRARY Shared)
  target_include_directories(${target} PRIVATE "${INSPO_CSRC_DIR}")
  target_include_directories(${target} SYSTEM PRIVATE ${CMAKE_CUDA_TOOLKIT_INCLUDE_DIRECTORIES})
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3>)
endfunction()
