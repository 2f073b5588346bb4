// Shared helpers for the NMS kernels (CPU and CUDA).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define DETKIT_HOST_DEVICE __host__ __device__
#else
#define DETKIT_HOST_DEVICE
#endif

namespace detkit {

// torchvision compares a box pair's IoU, computed in the boxes' dtype, with a double threshold
// (`ovr > iou_threshold`). For a float IoU `x`, `x > t_double` holds exactly when `x > t_float`, where
// t_float is the largest float not above t_double; comparing in the boxes' own type keeps the inner
// loops in one type (and vectorisable) without changing a single decision.
template <typename scalar_t>
inline scalar_t threshold_as(double thr) {
  scalar_t t = static_cast<scalar_t>(thr);
  if (static_cast<double>(t) > thr) {
    t = std::nextafter(t, -std::numeric_limits<scalar_t>::infinity());
  }
  return t;
}

// IoU of two boxes (x1, y1, x2, y2) with the arithmetic of torchvision's kernels, operation for operation,
// so that every backend of detkit and torchvision take the same decision on every pair.
template <typename scalar_t>
DETKIT_HOST_DEVICE inline scalar_t pair_iou(scalar_t ax1, scalar_t ay1, scalar_t ax2, scalar_t ay2, scalar_t aarea,
                                            scalar_t bx1, scalar_t by1, scalar_t bx2, scalar_t by2, scalar_t barea) {
  // std::max(a, b) and std::min(a, b), spelled out so that CUDA device code uses the same expressions.
  const scalar_t xx1 = ax1 < bx1 ? bx1 : ax1;
  const scalar_t yy1 = ay1 < by1 ? by1 : ay1;
  const scalar_t xx2 = bx2 < ax2 ? bx2 : ax2;
  const scalar_t yy2 = by2 < ay2 ? by2 : ay2;
  // std::max(0, v) keeps 0 when v is NaN, as torchvision does.
  const scalar_t w = scalar_t(0) < xx2 - xx1 ? xx2 - xx1 : scalar_t(0);
  const scalar_t h = scalar_t(0) < yy2 - yy1 ? yy2 - yy1 : scalar_t(0);
  const scalar_t inter = w * h;
  return inter / (aarea + barea - inter);
}

// The grain for at::parallel_for over classes: one task per class when the estimated work pays for waking the
// thread pool, else every class in one task. A parallel region costs tens of microseconds on a quiet machine, but
// a scheduler time slice (milliseconds, spent spinning) when other processes hold the other cores, as data-loader
// workers do during evaluation; torch's own kernels stay serial below 32768 elements for the same reason.
inline int64_t class_grain(int64_t num_classes, double work, double parallel_work) {
  return work >= parallel_work ? 1 : (num_classes > 1 ? num_classes : 1);
}

}  // namespace detkit
