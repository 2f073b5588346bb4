// The Python module detkit._C. Importing it runs the static registrations of the operators (torch.ops.detkit.*);
// the functions below only describe the build.
#include <torch/extension.h>

#ifdef WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace {

bool compiled_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

// CUDA runtime version the extension was compiled against, e.g. 13000 for 13.0; -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDART_VERSION;
#else
  return -1;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "detkit compiled operators (NMS); the ops themselves are torch.ops.detkit.*";
  m.def("compiled_with_cuda", &compiled_with_cuda, "Whether the CUDA kernels were compiled in");
  m.def("cuda_version", &cuda_version, "CUDA runtime version used at compile time (-1 without CUDA)");
}
