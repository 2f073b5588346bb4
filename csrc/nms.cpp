// Operator schemas of detkit. Each backend registers its kernels in its own file with TORCH_LIBRARY_IMPL
// (cpu/*.cpp, cuda/*.cu), so nothing here depends on which backends were compiled.
#include <torch/library.h>

TORCH_LIBRARY(detkit, m) {
  // Greedy NMS. dets: (N, 4) x1, y1, x2, y2; scores: (N,). Returns int64 indices of kept boxes, by descending
  // score. A box is suppressed by a kept box of higher score when their IoU is strictly above iou_threshold.
  m.def("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor");
  // Class-aware NMS: boxes only suppress boxes with the same idxs value. Returns kept indices by descending score.
  m.def("batched_nms(Tensor dets, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // Soft-NMS (Bodla et al. 2017). method: 0 linear, 1 gaussian. Returns (dets (K, 5), keep (K,)).
  m.def(
      "soft_nms(Tensor dets, Tensor scores, float iou_threshold, float sigma, float min_score, int method) "
      "-> (Tensor, Tensor)");
  // Class-aware soft-NMS: soft_nms run independently for each idxs value. Returns (dets (K, 5), keep (K,)) over
  // all classes, NaN scores first, then by descending decayed score, equal scores by ascending index.
  m.def(
      "batched_soft_nms(Tensor dets, Tensor scores, Tensor idxs, float iou_threshold, float sigma, float min_score, "
      "int method) -> (Tensor, Tensor)");
}
