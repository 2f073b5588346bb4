// CUDA kernels for hard NMS and class-aware (batched) NMS: the bitmask algorithm.
//
// Boxes are sorted by descending score. A 2-D grid of 64x64 tiles computes, for every box i, a bitmask of the
// boxes j > i (in score order) that it would suppress: IoU strictly above the threshold and, for batched NMS, the
// same class. The greedy pass over the masks then runs on the host, 64 boxes per word. Classes are compared
// directly (no coordinate offsets), so batched NMS is exact for any coordinate range.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../nms_common.h"

namespace detkit {
namespace {

constexpr int kBlock = 64;  // boxes per tile = bits per mask word

template <typename scalar_t>
__global__ void nms_mask_kernel(int64_t n, scalar_t thr, const scalar_t* __restrict__ boxes,
                                const int64_t* __restrict__ labels, unsigned long long* __restrict__ mask) {
  const int row_tile = blockIdx.y;
  const int col_tile = blockIdx.x;
  if (row_tile > col_tile) return;  // only j > i matters
  const int row_size = min(static_cast<int64_t>(kBlock), n - static_cast<int64_t>(row_tile) * kBlock);
  const int col_size = min(static_cast<int64_t>(kBlock), n - static_cast<int64_t>(col_tile) * kBlock);

  __shared__ scalar_t tile[kBlock * 5];  // x1, y1, x2, y2, area of the column boxes
  __shared__ int64_t tile_labels[kBlock];
  if (threadIdx.x < col_size) {
    const int64_t j = static_cast<int64_t>(col_tile) * kBlock + threadIdx.x;
    const scalar_t* bj = boxes + 4 * j;
    tile[5 * threadIdx.x + 0] = bj[0];
    tile[5 * threadIdx.x + 1] = bj[1];
    tile[5 * threadIdx.x + 2] = bj[2];
    tile[5 * threadIdx.x + 3] = bj[3];
    tile[5 * threadIdx.x + 4] = (bj[2] - bj[0]) * (bj[3] - bj[1]);
    tile_labels[threadIdx.x] = labels ? labels[j] : 0;
  }
  __syncthreads();
  if (threadIdx.x < row_size) {
    const int64_t i = static_cast<int64_t>(row_tile) * kBlock + threadIdx.x;
    const scalar_t* bi = boxes + 4 * i;
    const scalar_t iarea = (bi[2] - bi[0]) * (bi[3] - bi[1]);
    const int64_t ilabel = labels ? labels[i] : 0;
    unsigned long long bits = 0;
    const int start = row_tile == col_tile ? threadIdx.x + 1 : 0;
    for (int k = start; k < col_size; ++k) {
      const scalar_t* t = tile + 5 * k;
      const scalar_t ovr = pair_iou(bi[0], bi[1], bi[2], bi[3], iarea, t[0], t[1], t[2], t[3], t[4]);
      if (tile_labels[k] == ilabel && ovr > thr) bits |= 1ULL << k;
    }
    const int64_t col_tiles = (n + kBlock - 1) / kBlock;
    mask[i * col_tiles + col_tile] = bits;
  }
}

at::Tensor nms_cuda_impl(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& idxs,
                         double iou_threshold) {
  TORCH_CHECK(dets.is_cuda() && scores.is_cuda(), "detkit::nms (CUDA): dets and scores must be CUDA tensors");
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, "detkit::nms (CUDA): dets must be (N, 4), got ", dets.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0),
              "detkit::nms (CUDA): scores must be (N,) matching dets, got ", scores.sizes());
  TORCH_CHECK(dets.scalar_type() == scores.scalar_type(), "detkit::nms (CUDA): dets and scores dtypes differ");
  const c10::cuda::CUDAGuard guard(dets.device());
  const int64_t n = dets.size(0);
  if (n == 0) return at::empty({0}, dets.options().dtype(at::kLong));

  const at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = dets.index_select(0, order).contiguous();
  at::Tensor labels;
  if (idxs.defined()) labels = idxs.to(at::kLong).index_select(0, order).contiguous();
  const int64_t col_tiles = (n + kBlock - 1) / kBlock;
  at::Tensor mask = at::empty({n * col_tiles}, dets.options().dtype(at::kLong));
  const dim3 blocks(col_tiles, col_tiles);
  const dim3 threads(kBlock);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "detkit_nms_cuda", [&] {
    nms_mask_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
        n, threshold_as<scalar_t>(iou_threshold), sorted.data_ptr<scalar_t>(),
        labels.defined() ? labels.data_ptr<int64_t>() : nullptr,
        reinterpret_cast<unsigned long long*>(mask.data_ptr<int64_t>()));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Greedy pass over the masks on the host.
  const at::Tensor mask_cpu = mask.to(at::kCPU);
  const unsigned long long* m = reinterpret_cast<const unsigned long long*>(mask_cpu.data_ptr<int64_t>());
  std::vector<unsigned long long> removed(col_tiles, 0);
  at::Tensor keep = at::empty({n}, at::TensorOptions().dtype(at::kLong).device(at::kCPU));
  int64_t* k = keep.data_ptr<int64_t>();
  int64_t num_kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t tile = i / kBlock, bit = i % kBlock;
    if (!(removed[tile] & (1ULL << bit))) {
      k[num_kept++] = i;
      const unsigned long long* row = m + i * col_tiles;
      for (int64_t t = tile; t < col_tiles; ++t) removed[t] |= row[t];
    }
  }
  return order.index_select(0, keep.narrow(0, 0, num_kept).to(order.device()));
}

at::Tensor nms_cuda(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  return nms_cuda_impl(dets, scores, at::Tensor(), iou_threshold);
}

at::Tensor batched_nms_cuda(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == dets.size(0),
              "detkit::batched_nms (CUDA): idxs must be (N,) matching dets, got ", idxs.sizes());
  TORCH_CHECK(idxs.device() == dets.device(), "detkit::batched_nms (CUDA): idxs must be on the boxes' device");
  return nms_cuda_impl(dets, scores, idxs, iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CUDA, m) {
  m.impl("nms", TORCH_FN(nms_cuda));
  m.impl("batched_nms", TORCH_FN(batched_nms_cuda));
}

}  // namespace detkit
