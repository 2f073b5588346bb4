// CPU kernels for Soft-NMS (Bodla et al., "Improving Object Detection With One Line of Code", ICCV 2017) and
// its class-aware form.
//
// Repeatedly select the box with the highest current score (ties: the lowest input index; NaN scores count as
// the highest, as in torch.sort), then decay the score of every remaining box by its IoU with the selected one:
//   linear:   s *= 1 - iou   when iou > iou_threshold (else unchanged)
//   gaussian: s *= exp(-iou^2 / sigma)   for every remaining box (iou_threshold is not used)
// A box whose score is below min_score (at the start or after a decay) is dropped. A NaN IoU (a box with a NaN
// coordinate) leaves the score unchanged. Scores and IoUs are computed in the boxes' dtype; min_score is compared
// in float64.
//
// batched_soft_nms runs that loop independently for each value of idxs (one task per class, in parallel when
// the classes hold enough boxes), then merges the per-class outputs into one list ordered by decayed score (see
// `ranks_before`).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../nms_common.h"

namespace detkit {
namespace {

constexpr int64_t kLinear = 0;
constexpr int64_t kGaussian = 1;

struct SoftNmsParams {
  double iou_threshold;
  double sigma;
  double min_score;
  int64_t method;
};

// A kept box: its input index and its score when it was selected.
template <typename scalar_t>
struct Kept {
  int64_t index;
  scalar_t score;
};

// NaN scores first, then descending score, equal scores (0.0 and -0.0 are equal) by ascending input index. A
// strict total order, used twice: a round selects the alive box that comes first in it (soft-NMS's rule: the
// highest score, NaN counting as the highest, ties to the lowest index), and it is batched_soft_nms's output
// order, that is torch.sort(descending=True, stable=True) of the kept boxes listed by input index, which is what
// the fallback does.
template <typename scalar_t>
inline bool ranks_before(scalar_t a_score, int64_t a_index, scalar_t b_score, int64_t b_index) {
  const bool a_nan = std::isnan(a_score), b_nan = std::isnan(b_score);
  if (a_nan != b_nan) return a_nan;
  if (!a_nan && a_score != b_score) return a_score > b_score;
  return a_index < b_index;
}

template <typename scalar_t>
inline bool kept_before(const Kept<scalar_t>& a, const Kept<scalar_t>& b) {
  return ranks_before(a.score, a.index, b.score, b.index);
}

// exp(x) for x <= 0 (the gaussian weight exp(-iou^2 / sigma)) from IEEE +, -, * and exact powers of two only,
// the same operations in the same order as nms_fallback.exp_nonpositive. std::exp, MKL's exp (torch.exp on the
// CPU) and CUDA's exp round differently in the last bit for 1-5% of inputs, and soft-NMS decisions (min_score,
// ties, the output order) depend on those bits; this one rounds identically in every backend, and vectorises.
// Within 1.2 ulp of the exact value in float32, 1 ulp in float64; below `low` (where exp underflows to 0 anyway)
// it returns exp(low).
constexpr double factorial(int d) { return d <= 1 ? 1.0 : d * factorial(d - 1); }  // exact up to 18!

template <typename scalar_t>
struct ExpConstants;
template <>
struct ExpConstants<float> {
  using bits_t = int32_t;
  static constexpr double low = -104.0;      // exp(-104) rounds to 0 in float32
  static constexpr double round = 12582912;  // 1.5 * 2^23: (t + round) - round is t rounded to an integer, ties to even
  static constexpr int scale = 64;           // 2^k is applied as 2^(k + scale) * 2^-scale, both normal numbers
  static constexpr int bias = 127, mantissa = 23;
  static constexpr int degree = 7;                     // Taylor degree on |r| <= ln2 / 2
  static constexpr double ln2_hi = 0.693145751953125;  // 15 significant bits: k * ln2_hi is exact
  static constexpr double ln2_lo = 1.4286068202862176e-06;
};
template <>
struct ExpConstants<double> {
  using bits_t = int64_t;
  static constexpr double low = -746.0;
  static constexpr double round = 6755399441055744;  // 1.5 * 2^52
  static constexpr int scale = 600;
  static constexpr int bias = 1023, mantissa = 52;
  static constexpr int degree = 13;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // fdlibm's split of ln 2
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
};

// 2^e for an integer e in the normal range, from its bits
template <typename scalar_t>
inline scalar_t two_to(typename ExpConstants<scalar_t>::bits_t e) {
  using C = ExpConstants<scalar_t>;
  return std::bit_cast<scalar_t>(static_cast<typename C::bits_t>((e + C::bias) << C::mantissa));
}

template <typename scalar_t>
inline scalar_t exp_nonpositive(scalar_t x) {
  using C = ExpConstants<scalar_t>;
  // every constant is rounded from its double value, as torch.tensor(value, dtype=...) does in the fallback
  const scalar_t low = static_cast<scalar_t>(C::low);
  const scalar_t round = static_cast<scalar_t>(C::round);
  x = x >= low ? x : low;  // also maps a NaN to low (never reached: callers pass 0 for a NaN IoU)
  const scalar_t k = (x * static_cast<scalar_t>(1.4426950408889634) + round) - round;  // x / ln 2, to an integer
  const scalar_t r = (x - k * static_cast<scalar_t>(C::ln2_hi)) - k * static_cast<scalar_t>(C::ln2_lo);
  // Taylor polynomial by Horner's rule, each step one multiply and one add (no fused multiply-add)
  scalar_t p = static_cast<scalar_t>(1.0 / factorial(C::degree));
  for (int d = C::degree - 1; d >= 0; --d) p = p * r + static_cast<scalar_t>(1.0 / factorial(d));
  const auto e = static_cast<typename C::bits_t>(k);
  return (p * two_to<scalar_t>(e + C::scale)) * two_to<scalar_t>(-C::scale);
}

// The smallest scalar_t not below min_score: for a score s, `s < min_score_as(m)` holds exactly when
// `double(s) < m` (a plain cast could round m down and keep a score below it). Keeps the hot loop in one type.
template <typename scalar_t>
inline scalar_t min_score_as(double min_score) {
  scalar_t t = static_cast<scalar_t>(min_score);
  if (static_cast<double>(t) < min_score) t = std::nextafter(t, std::numeric_limits<scalar_t>::infinity());
  return t;
}

// The boxes of one soft-NMS problem (all boxes for soft_nms, one class for batched_soft_nms) as a structure of
// arrays, so that the per-round loops run over contiguous memory however the classes interleave in the input.
// Reused from one class to the next by a task.
template <typename scalar_t>
struct Candidates {
  std::vector<scalar_t> x1, y1, x2, y2, area, score;
  std::vector<int64_t> index;

  // Loads the boxes ids[0..count) of dets (N, 4) and scores (N,) (ids null: all N), dropping those whose score is
  // below min_score. Returns how many are left.
  int64_t load(const int64_t* ids, int64_t count, const scalar_t* b, const scalar_t* s, double min_score) {
    for (auto* v : {&x1, &y1, &x2, &y2, &area, &score}) v->resize(count);
    index.resize(count);
    int64_t m = 0;
    for (int64_t k = 0; k < count; ++k) {
      const int64_t i = ids ? ids[k] : k;
      if (static_cast<double>(s[i]) < min_score) continue;
      const scalar_t* bi = b + 4 * i;
      x1[m] = bi[0];
      y1[m] = bi[1];
      x2[m] = bi[2];
      y2[m] = bi[3];
      area[m] = (bi[2] - bi[0]) * (bi[3] - bi[1]);
      score[m] = s[i];
      index[m] = i;
      ++m;
    }
    return m;
  }

  // Moves box `from` to position `to`.
  void move(int64_t from, int64_t to) {
    x1[to] = x1[from];
    y1[to] = y1[from];
    x2[to] = x2[from];
    y2[to] = y2[from];
    area[to] = area[from];
    score[to] = score[from];
    index[to] = index[from];
  }
};

// Soft-NMS over the first m boxes of `c` (which it overwrites). Appends the selected boxes to `out`, in
// selection order. The boxes' positions carry no meaning (a removed box is replaced by the last one): the
// selection compares input indices explicitly, so every loop is a plain pass over the alive boxes.
template <typename scalar_t>
void soft_nms_core(Candidates<scalar_t>& c, int64_t m, const SoftNmsParams& p, std::vector<Kept<scalar_t>>& out) {
  const scalar_t thr = threshold_as<scalar_t>(p.iou_threshold);
  const scalar_t sig = static_cast<scalar_t>(p.sigma);
  const scalar_t min_score = min_score_as<scalar_t>(p.min_score);
  scalar_t *x1 = c.x1.data(), *y1 = c.y1.data(), *x2 = c.x2.data(), *y2 = c.y2.data();
  scalar_t *area = c.area.data(), *s = c.score.data();
  const int64_t* index = c.index.data();
  int64_t best = 0;
  for (int64_t k = 1; k < m; ++k) {
    if (ranks_before(s[k], index[k], s[best], index[best])) best = k;
  }
  while (m > 0) {
    out.push_back({index[best], s[best]});
    const scalar_t bx1 = x1[best], by1 = y1[best], bx2 = x2[best], by2 = y2[best], barea = area[best];
    c.move(m - 1, best);  // the selected box leaves
    --m;
    // 1. decay every score; a weight of exactly 1 leaves it as is (s * 1 == s for every s, NaN included). The
    //    loops are branch-free (selects between computed values), so that the compiler vectorises them.
    if (p.method == kLinear) {
      for (int64_t k = 0; k < m; ++k) {
        const scalar_t iou = pair_iou(bx1, by1, bx2, by2, barea, x1[k], y1[k], x2[k], y2[k], area[k]);
        const scalar_t decay = iou > thr ? iou : scalar_t(0);  // a NaN IoU never decays
        s[k] = s[k] * (scalar_t(1) - decay);
      }
    } else {
      for (int64_t k = 0; k < m; ++k) {
        const scalar_t iou = pair_iou(bx1, by1, bx2, by2, barea, x1[k], y1[k], x2[k], y2[k], area[k]);
        const scalar_t e = -(iou * iou) / sig;
        // exp(0) = 1 for a disjoint box, and for a NaN IoU, which never decays
        s[k] = s[k] * exp_nonpositive(iou > scalar_t(0) ? e : scalar_t(0));
      }
    }
    // 2. drop the boxes now below min_score, and find the next one to select
    best = -1;
    scalar_t best_score = 0;
    for (int64_t k = 0; k < m;) {
      const scalar_t v = s[k];
      if (v < min_score) {
        c.move(m - 1, k);  // look at position k again: it holds the former last box
        --m;
        continue;
      }
      // ranks_before(v, index[k], best_score, index[best]), with the common case (v < best) first
      bool take;
      if (best < 0 || v > best_score) {
        take = true;
      } else if (v <= best_score) {
        take = v == best_score && index[k] < index[best];
      } else {  // a NaN on either side
        take = ranks_before(v, index[k], best_score, index[best]);
      }
      if (take) {
        best = k;
        best_score = v;
      }
      ++k;
    }
  }
}

void check_soft_nms_args(const at::Tensor& dets, const at::Tensor& scores, double sigma, int64_t method,
                         const char* op) {
  TORCH_CHECK(dets.dim() == 2 && dets.size(1) == 4, op, ": dets must be a (N, 4) tensor, got ", dets.sizes());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == dets.size(0), op,
              ": scores must be a (N,) tensor matching dets, got ", scores.sizes(), " for dets ", dets.sizes());
  TORCH_CHECK(dets.scalar_type() == scores.scalar_type(), op, ": dets and scores must have the same dtype, got ",
              dets.scalar_type(), " and ", scores.scalar_type());
  TORCH_CHECK(at::isFloatingType(dets.scalar_type()), op, ": dets must be floating point, got ",
              dets.scalar_type());
  TORCH_CHECK(method == kLinear || method == kGaussian, op, ": method must be 0 (linear) or 1 (gaussian), got ",
              method);
  TORCH_CHECK(method == kLinear || sigma > 0, op, ": sigma must be > 0 for the gaussian method, got ", sigma);
}

// dets (K, 5): the kept boxes and their scores; keep (K,): their input indices. In the order of `kept`.
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> make_outputs(const std::vector<Kept<scalar_t>>& kept, const scalar_t* b,
                                                const at::TensorOptions& options) {
  const int64_t k = static_cast<int64_t>(kept.size());
  at::Tensor out_keep = at::empty({k}, options.dtype(at::kLong));
  at::Tensor out_dets = at::empty({k, 5}, options);
  int64_t* ok = out_keep.data_ptr<int64_t>();
  scalar_t* od = out_dets.data_ptr<scalar_t>();
  for (int64_t r = 0; r < k; ++r) {
    ok[r] = kept[r].index;
    for (int c = 0; c < 4; ++c) od[5 * r + c] = b[4 * kept[r].index + c];
    od[5 * r + 4] = kept[r].score;
  }
  return std::make_tuple(out_dets, out_keep);
}

std::tuple<at::Tensor, at::Tensor> soft_nms_cpu(const at::Tensor& dets_in, const at::Tensor& scores_in,
                                                double iou_threshold, double sigma, double min_score,
                                                int64_t method) {
  check_soft_nms_args(dets_in, scores_in, sigma, method, "detkit::soft_nms");
  const at::Tensor dets = dets_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const SoftNmsParams params{iou_threshold, sigma, min_score, method};
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "detkit_soft_nms_cpu", [&] {
    const scalar_t* b = dets.data_ptr<scalar_t>();
    Candidates<scalar_t> c;
    const int64_t m = c.load(nullptr, dets.size(0), b, scores.data_ptr<scalar_t>(), min_score);
    std::vector<Kept<scalar_t>> kept;
    soft_nms_core(c, m, params, kept);
    out = make_outputs(kept, b, dets.options());  // selection order
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> batched_soft_nms_cpu(const at::Tensor& dets_in, const at::Tensor& scores_in,
                                                        const at::Tensor& idxs, double iou_threshold, double sigma,
                                                        double min_score, int64_t method) {
  check_soft_nms_args(dets_in, scores_in, sigma, method, "detkit::batched_soft_nms");
  TORCH_CHECK(idxs.dim() == 1 && idxs.size(0) == dets_in.size(0),
              "detkit::batched_soft_nms: idxs must be a (N,) tensor matching dets, got ", idxs.sizes(),
              " for dets ", dets_in.sizes());
  TORCH_CHECK(!at::isFloatingType(idxs.scalar_type()) && !at::isComplexType(idxs.scalar_type()) &&
                  idxs.scalar_type() != at::kBool,
              "detkit::batched_soft_nms: idxs must be integer, got ", idxs.scalar_type());
  const int64_t n = dets_in.size(0);
  const at::Tensor dets = dets_in.contiguous();
  const at::Tensor scores = scores_in.contiguous();
  const SoftNmsParams params{iou_threshold, sigma, min_score, method};

  // Input indices grouped by class (the order within a class does not matter: the core compares indices)
  const at::Tensor cls = idxs.to(at::kLong).contiguous();
  const auto sorted = cls.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor sorted_cls = std::get<0>(sorted).contiguous();
  const at::Tensor ids = std::get<1>(sorted).contiguous();
  std::vector<int64_t> bounds = {0};
  const int64_t* c = sorted_cls.data_ptr<int64_t>();
  for (int64_t i = 1; i < n; ++i) {
    if (c[i] != c[i - 1]) bounds.push_back(i);
  }
  bounds.push_back(n);
  const int64_t num_classes = n == 0 ? 0 : static_cast<int64_t>(bounds.size()) - 1;

  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(dets.scalar_type(), "detkit_batched_soft_nms_cpu", [&] {
    const scalar_t* b = dets.data_ptr<scalar_t>();
    const scalar_t* s = scores.data_ptr<scalar_t>();
    const int64_t* id = ids.data_ptr<int64_t>();
    std::vector<std::vector<Kept<scalar_t>>> per_class(num_classes);
    // Classes are independent: one task per class, each with its own buffers and output list. In parallel from
    // 2^20 box pairs (sum of squared class sizes; a round visits every alive box of the class, ~2 ns each).
    double pairs = 0;
    for (int64_t g = 0; g < num_classes; ++g) {
      const double size = static_cast<double>(bounds[g + 1] - bounds[g]);
      pairs += size * size;
    }
    at::parallel_for(0, num_classes, class_grain(num_classes, pairs, 1 << 20), [&](int64_t begin, int64_t end) {
      Candidates<scalar_t> cand;
      for (int64_t g = begin; g < end; ++g) {
        const int64_t m = cand.load(id + bounds[g], bounds[g + 1] - bounds[g], b, s, min_score);
        std::vector<Kept<scalar_t>>& kept = per_class[g];
        soft_nms_core(cand, m, params, kept);
        // Selection order is already this order unless decays raised a score's rank: a negative score (only
        // with min_score < 0) grows towards 0, and +inf * 0 is NaN.
        if (!std::is_sorted(kept.begin(), kept.end(), kept_before<scalar_t>)) {
          std::sort(kept.begin(), kept.end(), kept_before<scalar_t>);
        }
      }
    });
    // Merge the sorted per-class lists pairwise, log2(classes) rounds; the order is total, so this is the sort.
    // Serial: a few microseconds per thousand boxes, less than waking the thread pool again.
    std::vector<std::vector<Kept<scalar_t>>> lists = std::move(per_class);
    while (lists.size() > 1) {
      std::vector<std::vector<Kept<scalar_t>>> merged((lists.size() + 1) / 2);
      for (size_t q = 0; q < merged.size(); ++q) {
        if (2 * q + 1 == lists.size()) {
          merged[q] = std::move(lists[2 * q]);
          continue;
        }
        const auto& l = lists[2 * q];
        const auto& r = lists[2 * q + 1];
        merged[q].resize(l.size() + r.size());
        std::merge(l.begin(), l.end(), r.begin(), r.end(), merged[q].begin(), kept_before<scalar_t>);
      }
      lists = std::move(merged);
    }
    out = make_outputs(lists.empty() ? std::vector<Kept<scalar_t>>() : lists[0], b, dets.options());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(detkit, CPU, m) {
  m.impl("soft_nms", TORCH_FN(soft_nms_cpu));
  m.impl("batched_soft_nms", TORCH_FN(batched_soft_nms_cpu));
}

}  // namespace detkit
