// CPU kernels for hard NMS and class-aware (batched) NMS.
//
// The result is exactly greedy NMS (the decisions of torchvision.ops.nms, pair by pair), but the boxes that
// a kept box can suppress are found by a sweep over the boxes sorted by x1 instead of a scan of all N boxes:
//   - a box whose x1 is >= the kept box's x2 cannot overlap it (its intersection width is <= 0);
//   - a box in the sorted prefix whose running maximum of x2 is <= the kept box's x1 cannot overlap it either.
// Both bounds are found by binary search and are exact in floating point (no epsilon), so the answer does not
// depend on them; they only skip pairs whose IoU is 0 (or NaN), which can never exceed a threshold >= 0.
// A negative threshold suppresses even disjoint boxes, so it falls back to scanning every box.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../nms_common.h"

namespace detkit {
namespace {

void check_boxes(const at::Tensor& dets, const at::Tensor& scores, const char* op) {
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, op, ": dets must be a (N, 4) tensor, got ", dets.sizes());
  TORCH_CHECK(scores.dim() == 1, op, ": scores must be a (N,) tensor, got ", scores.sizes());
  TORCH_CHECK(dets.size(0) == scores.size(0), op, ": dets and scores must have the same length, got ",
              dets.size(0), " and ", scores.size(0));
  TORCH_CHECK(dets.scalar_type() == scores.scalar_type(), op, ": dets and scores must have the same dtype, got ",
              dets.scalar_type(), " and ", scores.scalar_type());
  TORCH_CHECK(at::isFloatingType(dets.scalar_type()), op, ": dets must be floating point, got ",
              dets.scalar_type());
}

// Greedy NMS over `count` boxes given by `ids` (original indices, in visiting order = descending score).
// Writes keep[id] = 1 for every kept box. `x1..area` are indexed by original index.
template <typename scalar_t>
void sweep_nms(const int64_t* ids, int64_t count, const scalar_t* x1, const scalar_t* y1, const scalar_t* x2,
               const scalar_t* y2, const scalar_t* area, double iou_threshold, uint8_t* keep) {
  if (count == 0) return;
  const scalar_t thr = threshold_as<scalar_t>(iou_threshold);
  const bool full_scan = !(iou_threshold >= 0.0);  // negative (or NaN: then nothing is ever suppressed)

  // Boxes with a NaN area have a NaN IoU with every box: they are kept and never suppress. Leave them out.
  std::vector<int32_t> valid;  // ranks (positions in `ids`) of boxes with a non-NaN area
  valid.reserve(count);
  for (int64_t r = 0; r < count; ++r) {
    if (std::isnan(area[ids[r]])) {
      keep[ids[r]] = 1;
    } else {
      valid.push_back(static_cast<int32_t>(r));
    }
  }
  const int64_t m = static_cast<int64_t>(valid.size());
  if (m == 0) return;

  // Structure of arrays in x1 order; every inner loop below runs over contiguous memory.
  std::sort(valid.begin(), valid.end(), [&](int32_t a, int32_t b) {
    const scalar_t xa = x1[ids[a]], xb = x1[ids[b]];
    return xa < xb || (xa == xb && a < b);
  });
  std::vector<scalar_t> sx1(m), sy1(m), sx2(m), sy2(m), sarea(m), max_x2(m);
  std::vector<int32_t> srank(m), pos_of_rank(count, -1);
  std::vector<uint8_t> suppressed(m, 0);
  for (int64_t k = 0; k < m; ++k) {
    const int64_t i = ids[valid[k]];
    sx1[k] = x1[i];
    sy1[k] = y1[i];
    sx2[k] = x2[i];
    sy2[k] = y2[i];
    sarea[k] = area[i];
    srank[k] = valid[k];
    pos_of_rank[valid[k]] = static_cast<int32_t>(k);
    // running maximum of x2 (std::max semantics; no NaN here since the area is not NaN)
    max_x2[k] = k == 0 ? sx2[k] : std::max(max_x2[k - 1], sx2[k]);
  }

  for (int64_t r = 0; r < count; ++r) {
    const int32_t p = pos_of_rank[r];
    if (p < 0 || suppressed[p]) continue;  // NaN box (already kept) or suppressed
    keep[ids[r]] = 1;
    const scalar_t ix1 = sx1[p], iy1 = sy1[p], ix2 = sx2[p], iy2 = sy2[p], iarea = sarea[p];
    int64_t lo = 0, hi = m;
    if (!full_scan) {
      lo = std::upper_bound(max_x2.begin(), max_x2.end(), ix1) - max_x2.begin();
      hi = std::lower_bound(sx1.begin(), sx1.end(), ix2) - sx1.begin();
    }
    const int32_t rank = static_cast<int32_t>(r);
    const scalar_t* px1 = sx1.data();
    const scalar_t* py1 = sy1.data();
    const scalar_t* px2 = sx2.data();
    const scalar_t* py2 = sy2.data();
    const scalar_t* parea = sarea.data();
    const int32_t* prank = srank.data();
    uint8_t* psup = suppressed.data();
    // Branch-free so that the compiler vectorises it; boxes of higher score (rank <= r) are already decided.
    for (int64_t k = lo; k < hi; ++k) {
      const scalar_t ovr = pair_iou(ix1, iy1, ix2, iy2, iarea, px1[k], py1[k], px2[k], py2[k], parea[k]);
      psup[k] |= static_cast<uint8_t>((ovr > thr) & (prank[k] > rank));
    }
  }
}

// Shared body of nms and batched_nms. `idxs` undefined means one class.
at::Tensor nms_impl(const at::Tensor& dets_in, const at::Tensor& scores_in, const at::Tensor& idxs_in,
                    double iou_threshold) {
  const int64_t n = dets_in.size(0);
  if (n == 0) return at::empty({0}, dets_in.options().dtype(at::kLong));
  const at::Tensor dets = dets_in.contiguous();
  // Visiting order: descending score, ties by index (stable), NaN scores first, exactly as torch.sort.
  const at::Tensor order = std::get<1>(scores_in.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  at::Tensor groups;  // the same order, regrouped by class with a stable sort
  std::vector<int64_t> bounds = {0, n};
  if (idxs_in.defined()) {
    const at::Tensor cls = idxs_in.index_select(0, order);
    const at::Tensor by_cls = std::get<1>(cls.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
    groups = order.index_select(0, by_cls).contiguous();
    const at::Tensor sorted_cls = cls.index_select(0, by_cls).contiguous();
    const int64_t* c = sorted_cls.data_ptr<int64_t>();
    bounds = {0};
    for (int64_t i = 1; i < n; ++i) {
      if (c[i] != c[i - 1]) bounds.push_back(i);
    }
    bounds.push_back(n);
  } else {
    groups = order.contiguous();
  }

  at::Tensor keep_flag = at::zeros({n}, dets.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "detkit_nms_cpu", [&] {
    const at::Tensor x1t = dets.select(1, 0).contiguous(), y1t = dets.select(1, 1).contiguous();
    const at::Tensor x2t = dets.select(1, 2).contiguous(), y2t = dets.select(1, 3).contiguous();
    const at::Tensor areat = (x2t - x1t) * (y2t - y1t);
    const scalar_t *x1 = x1t.data_ptr<scalar_t>(), *y1 = y1t.data_ptr<scalar_t>();
    const scalar_t *x2 = x2t.data_ptr<scalar_t>(), *y2 = y2t.data_ptr<scalar_t>();
    const scalar_t* area = areat.data_ptr<scalar_t>();
    const int64_t* ids = groups.data_ptr<int64_t>();
    uint8_t* keep = keep_flag.data_ptr<uint8_t>();
    const int64_t num_groups = static_cast<int64_t>(bounds.size()) - 1;
    // Classes are independent: one task per class; each writes keep[] only at its own boxes. In parallel from
    // 32768 boxes (the sweep is close to linear in the boxes; below that, a few milliseconds at most).
    const int64_t grain = class_grain(num_groups, static_cast<double>(n), 32768.0);
    at::parallel_for(0, num_groups, grain, [&](int64_t begin, int64_t end) {
      for (int64_t g = begin; g < end; ++g) {
        sweep_nms<scalar_t>(ids + bounds[g], bounds[g + 1] - bounds[g], x1, y1, x2, y2, area, iou_threshold,
                            keep);
      }
    });
  });
  // Kept indices in the global score order.
  return order.index_select(0, keep_flag.index_select(0, order).nonzero().squeeze(1));
}

at::Tensor nms_cpu(const at::Tensor& dets, const at::Tensor& scores, double iou_threshold) {
  check_boxes(dets, scores, "detkit::nms");
  return nms_impl(dets, scores, at::Tensor(), iou_threshold);
}

at::Tensor batched_nms_cpu(const at::Tensor& dets, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  check_boxes(dets, scores, "detkit::batched_nms");
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == dets.size(0),
              "detkit::batched_nms: idxs must be a (N,) tensor matching dets, got ", idxs.sizes());
  TORCH_CHECK(!at::isFloatingType(idxs.scalar_type()), "detkit::batched_nms: idxs must be integer, got ",
              idxs.scalar_type());
  return nms_impl(dets, scores, idxs.to(at::kLong), iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CPU, m) {
  m.impl("nms", TORCH_FN(nms_cpu));
  m.impl("batched_nms", TORCH_FN(batched_nms_cpu));
}

}  // namespace detkit
