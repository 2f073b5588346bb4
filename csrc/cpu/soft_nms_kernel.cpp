// CPU kernel for Soft-NMS (Bodla et al., "Improving Object Detection With One Line of Code", ICCV 2017).
//
// Repeatedly select the box with the highest current score (ties: the lowest input index; NaN scores count as
// the highest, as in torch.sort), then decay the score of every remaining box by its IoU with the selected one:
//   linear:   s *= 1 - iou   when iou > iou_threshold (else unchanged)
//   gaussian: s *= exp(-iou^2 / sigma)   for every remaining box (iou_threshold is not used)
// A box whose score is below min_score (at the start or after a decay) is dropped. A NaN IoU (a box with a NaN
// coordinate) leaves the score unchanged. Scores and IoUs are computed in the boxes' dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "../nms_common.h"

namespace detkit {
namespace {

// true when a should be selected before b (a NaN score is the highest; equal scores keep input order)
template <typename scalar_t>
inline bool higher(scalar_t a, scalar_t b) {
  if (std::isnan(a)) return !std::isnan(b);
  return a > b;
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cpu(const at::Tensor& dets_in, const at::Tensor& scores_in,
                                                double iou_threshold, double sigma, double min_score,
                                                int64_t method) {
  TORCH_CHECK(dets_in.dim() == 2 && dets_in.size(1) == 4, "detkit::soft_nms: dets must be a (N, 4) tensor, got ",
              dets_in.sizes());
  TORCH_CHECK(scores_in.dim() == 1 && scores_in.size(0) == dets_in.size(0),
              "detkit::soft_nms: scores must be a (N,) tensor matching dets, got ", scores_in.sizes());
  TORCH_CHECK(dets_in.scalar_type() == scores_in.scalar_type(), "detkit::soft_nms: dets and scores dtypes differ");
  TORCH_CHECK(at::isFloatingType(dets_in.scalar_type()), "detkit::soft_nms: dets must be floating point");
  TORCH_CHECK(method == 0 || method == 1, "detkit::soft_nms: method must be 0 (linear) or 1 (gaussian), got ",
              method);
  TORCH_CHECK(method == 0 || sigma > 0, "detkit::soft_nms: sigma must be > 0, got ", sigma);

  const int64_t n = dets_in.size(0);
  const at::Tensor dets = dets_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  at::Tensor out_dets, out_keep;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "detkit_soft_nms_cpu", [&] {
    const scalar_t* b = dets.data_ptr<scalar_t>();
    const scalar_t thr = threshold_as<scalar_t>(iou_threshold);
    const scalar_t sig = static_cast<scalar_t>(sigma);
    std::vector<scalar_t> s(scores.data_ptr<scalar_t>(), scores.data_ptr<scalar_t>() + n);
    std::vector<scalar_t> area(n);
    std::vector<int64_t> alive;  // input indices still in play, in input order
    alive.reserve(n);
    for (int64_t i = 0; i < n; ++i) {
      area[i] = (b[4 * i + 2] - b[4 * i]) * (b[4 * i + 3] - b[4 * i + 1]);
      if (!(static_cast<double>(s[i]) < min_score)) alive.push_back(i);
    }
    std::vector<int64_t> keep;
    std::vector<scalar_t> kept_scores;
    while (!alive.empty()) {
      size_t best = 0;
      for (size_t k = 1; k < alive.size(); ++k) {
        if (higher(s[alive[k]], s[alive[best]])) best = k;
      }
      const int64_t i = alive[best];
      keep.push_back(i);
      kept_scores.push_back(s[i]);
      const scalar_t* bi = b + 4 * i;
      size_t w = 0;  // compact `alive` in place, dropping the selected box and boxes that fall below min_score
      for (size_t k = 0; k < alive.size(); ++k) {
        const int64_t j = alive[k];
        if (j == i) continue;
        const scalar_t* bj = b + 4 * j;
        const scalar_t iou = pair_iou(bi[0], bi[1], bi[2], bi[3], area[i], bj[0], bj[1], bj[2], bj[3], area[j]);
        if (!std::isnan(iou)) {
          if (method == 0) {
            if (iou > thr) s[j] *= scalar_t(1) - iou;
          } else {
            s[j] *= std::exp(-(iou * iou) / sig);
          }
        }
        if (!(static_cast<double>(s[j]) < min_score)) alive[w++] = j;
      }
      alive.resize(w);
    }
    const int64_t k = static_cast<int64_t>(keep.size());
    out_keep = at::empty({k}, dets.options().dtype(at::kLong));
    std::copy(keep.begin(), keep.end(), out_keep.data_ptr<int64_t>());
    out_dets = at::empty({k, 5}, dets.options());
    scalar_t* o = out_dets.data_ptr<scalar_t>();
    for (int64_t r = 0; r < k; ++r) {
      for (int c = 0; c < 4; ++c) o[5 * r + c] = b[4 * keep[r] + c];
      o[5 * r + 4] = kept_scores[r];
    }
  });
  return std::make_tuple(out_dets, out_keep);
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CPU, m) { m.impl("soft_nms", TORCH_FN(soft_nms_cpu)); }

}  // namespace detkit
