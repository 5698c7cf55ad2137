// The recurrence of lrnet's fused bidirectional GRU (lrnet/fastgru.py) as one C++ loop per pass.
//
// Built on first use by lrnet/gru_kernel.py (the system compiler with torch's headers, -O3
// -march=native) and registered as torch ops lrnet_gru::forward_steps / lrnet_gru::backward_steps.
// What it saves over the Python loop: each time step's gate maths is one pass over the (2, 3H, N)
// slice instead of about ten PyTorch element-wise ops (each a full read and write plus a dispatch),
// the step's hidden product is one batched GEMM instead of two, and in bf16 mode the bfloat16
// projections and gradients are read and written in the same passes (no conversion passes).
//
// Layout (feature-major, as fastgru.py): gates (2, 3H, T, N), rows r, z, n per direction; the
// forward direction reads time t = s at step s, the backward direction t = T - 1 - s. The states
// are kept by step in hs (T + 1, 2, H, N) and the hidden n products (W_hn h + b_hn) in ghn
// (T, 2, H, N), so each step's operands of the small GEMMs are contiguous.
// Equations: PyTorch's nn.GRU (gate order r, z, n); tanh(x) = 2 sigmoid(2x) - 1 as in fastgru.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>

namespace {

// L float32 lanes as GCC vector types: the element-wise maths below is written on whole vectors,
// so it is vectorised whatever the auto-vectoriser decides (L = 16: one AVX-512 register, two AVX2
// ones, four NEON ones); L = 1 does the last samples of a row that do not fill a vector.
// (The vector types are spelled out per width: GCC drops vector_size on template-dependent typedefs.)
template <int L>
struct VectorTypes;
template <>
struct VectorTypes<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
  typedef uint32_t U __attribute__((vector_size(64)));
  typedef uint16_t H __attribute__((vector_size(32)));
};
template <>
struct VectorTypes<1> {
  typedef float F __attribute__((vector_size(4)));
  typedef int32_t I __attribute__((vector_size(4)));
  typedef uint32_t U __attribute__((vector_size(4)));
  typedef uint16_t H __attribute__((vector_size(2)));
};

template <int L>
struct Lanes {
  using F = typename VectorTypes<L>::F;
  using I = typename VectorTypes<L>::I;
  using U = typename VectorTypes<L>::U;
  using H = typename VectorTypes<L>::H;

  static F load(const float* p) {
    F v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(float* p, F v) { __builtin_memcpy(p, &v, sizeof v); }

  // bfloat16 is the top half of a float32; rounding to it is to nearest, ties to even, as torch's.
  static F load(const at::BFloat16* p) {
    H v;
    __builtin_memcpy(&v, p, sizeof v);
    const U bits = __builtin_convertvector(v, U) << 16;
    return reinterpret_cast<const F&>(bits);
  }
  static void store(at::BFloat16* p, F v) {
    U bits = reinterpret_cast<const U&>(v);
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    const H half = __builtin_convertvector(bits >> 16, H);
    __builtin_memcpy(p, &half, sizeof half);
  }

  // e^x within about 2 ulp for x in [-87, 88] (clamped outside): x = k ln2 + r with |r| <= ln2 / 2,
  // e^r by its degree-7 Taylor polynomial, 2^k written into the exponent bits. Rounding to the
  // nearest k adds and subtracts 1.5 * 2^23 (exact in float32 without -ffast-math).
  static F exp(F x) {
    x = x < -87.0f ? F{} - 87.0f : x;
    x = x > 88.0f ? F{} + 88.0f : x;
    const F k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const F r = (x - k * 0.693359375f) + k * 2.12194440e-4f;  // ln2 split in two for exactness
    F p = F{} + 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const I bits = (__builtin_convertvector(k, I) + 127) << 23;
    return p * reinterpret_cast<const F&>(bits);
  }
  static F sigmoid(F x) { return 1.0f / (1.0f + exp(-x)); }
};

constexpr int kLanes = 16;

// `row.lanes<L>(i)` over samples [0, n): whole vectors, then one sample at a time.
template <typename Row>
inline void run_row(const Row& row, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) row.template lanes<kLanes>(i);
  for (; i < n; ++i) row.template lanes<1>(i);
}

// Pointers of one unit's row, at one step, in the buffers a pass reads and writes. P is the type
// of the GEMM operands and results: float, or bfloat16 in bf16 mode (input projections, hidden
// products and their gradients in bfloat16; states, gates and sums stay float32).
template <typename P>
struct ForwardRow {
  const P* pr;  // input projections r, z, n
  const P* pz;
  const P* pn;
  float* gr;  // activations r, z, n written here
  float* gz;
  float* gn;
  const P* hr;  // hidden products W_h h for r, z, n (this step, contiguous)
  const P* hz;
  const P* hn;
  const float* prev;  // state before the step
  float* out;         // state after the step
  P* mirror;          // bf16 mode: the state after the step again, as the next hidden product reads it
  float* keep_n;      // W_hn h + b_hn
  float bn;           // b_hn of the unit

  // The step on samples [i, i + L).
  template <int L>
  void lanes(int64_t i) const {
    using V = Lanes<L>;
    const auto r = V::sigmoid(V::load(pr + i) + V::load(hr + i));
    const auto z = V::sigmoid(V::load(pz + i) + V::load(hz + i));
    const auto hidden_n = V::load(hn + i) + bn;
    const auto cand = 2.0f * V::sigmoid(2.0f * (V::load(pn + i) + r * hidden_n)) - 1.0f;  // tanh
    const auto h = cand + z * (V::load(prev + i) - cand);
    V::store(gr + i, r);
    V::store(gz + i, z);
    V::store(gn + i, cand);
    V::store(out + i, h);
    if (mirror != nullptr) V::store(mirror + i, h);
    V::store(keep_n + i, hidden_n);
  }
};

template <typename P>
struct BackwardRow {
  float* gr;  // activations r, z, n in; gradients of the pre-activations out
  float* gz;
  float* gn;
  P* qr;  // bf16 mode: the same gradients, also here (read by the input-weight product)
  P* qz;
  P* qn;
  const float* hidden_n;  // W_hn h + b_hn
  const float* prev;      // state before the step
  const float* grad;      // dL/d(state after the step): the direct part ...
  const P* prod;          // ... plus, in bf16 mode, W_hh^T dL/d(W_hh h) of the step after (may be null)
  float* direct;          // dL/d(state before), the part that skips the products: grad * z
  P* dr;                  // dL/d(W_h h) for r, z, n (this step, contiguous)
  P* dz;
  P* dn;
  float* sum_n;  // running sum over steps of dL/d(W_hn h + b_hn)

  template <int L>
  void lanes(int64_t i) const {
    using V = Lanes<L>;
    const auto r = V::load(gr + i), z = V::load(gz + i), cand = V::load(gn + i);
    const auto g = prod != nullptr ? V::load(grad + i) + V::load(prod + i) : V::load(grad + i);
    const auto da_z = g * (V::load(prev + i) - cand) * z * (1.0f - z);
    const auto da_n = g * (1.0f - z) * (1.0f - cand * cand);
    const auto d_hidden_n = da_n * r;
    const auto da_r = d_hidden_n * V::load(hidden_n + i) * (1.0f - r);
    V::store(gr + i, da_r);
    V::store(gz + i, da_z);
    V::store(gn + i, da_n);
    if (qr != nullptr) {
      V::store(qr + i, da_r);
      V::store(qz + i, da_z);
      V::store(qn + i, da_n);
    }
    V::store(dr + i, da_r);
    V::store(dz + i, da_z);
    V::store(dn + i, d_hidden_n);
    V::store(sum_n + i, V::load(sum_n + i) + d_hidden_n);
    V::store(direct + i, g * z);
  }
};

// Row pointer of unit `row` (of `rows`) at step s in a (2, rows, T, N) time-major gates buffer:
// the forward direction reads time s, the backward direction time T - 1 - s.
template <typename T>
inline T* step_row(T* base, int64_t d, int64_t rows, int64_t row, int64_t steps, int64_t n, int64_t s) {
  const int64_t t = d == 0 ? s : steps - 1 - s;
  return base + ((d * rows + row) * steps + t) * n;
}

void check(const at::Tensor& t, at::ScalarType type, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.is_contiguous(),
              name, " must be a contiguous ", c10::toString(type), " CPU tensor");
}

// bf16 mode when the bfloat16 buffers are given (non-empty): `half` shaped as the gates, `hb` as hs.
bool bf16_mode(const at::Tensor& half, const at::Tensor& gates, const at::Tensor& hb, const at::Tensor& hs) {
  if (half.numel() == 0) {
    TORCH_CHECK(hb.numel() == 0, "bfloat16 states given without bfloat16 projections");
    return false;
  }
  check(half, at::kBFloat16, "half");
  check(hb, at::kBFloat16, "hb");
  TORCH_CHECK(half.sizes() == gates.sizes() && hb.sizes() == hs.sizes(),
              "the bfloat16 buffers must be shaped as the gates and the states");
  return true;
}

template <typename P>
void forward_loop(at::Tensor& gates, const at::Tensor& proj, at::Tensor& hs, const at::Tensor& hb,
                  at::Tensor& kept, const at::Tensor& w_hh, const float* b, bool keep) {
  constexpr bool half = std::is_same_v<P, at::BFloat16>;
  const int64_t hid = w_hh.size(2), steps = gates.size(2), n = gates.size(3);
  const at::Tensor w = half ? w_hh.to(at::kBFloat16) : w_hh;
  at::Tensor gh = at::empty({2, 3 * hid, n}, gates.options().dtype(w.scalar_type()));
  float* g = gates.data_ptr<float>();
  const P* pj = proj.data_ptr<P>();
  const P* ghp = gh.data_ptr<P>();
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t cur_i = keep ? s : s % 2, next_i = keep ? s + 1 : (s + 1) % 2;
    at::bmm_out(gh, w, half ? hb[cur_i] : hs[cur_i]);
    const float* cur = hs[cur_i].data_ptr<float>();
    float* next = hs[next_i].data_ptr<float>();
    P* mirror = half ? hb[next_i].data_ptr<P>() : nullptr;
    float* kn = kept[keep ? s : 0].data_ptr<float>();
    at::parallel_for(0, 2 * hid, 8, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t d = row / hid, u = row % hid;
        const P* hr = ghp + (d * 3 * hid + u) * n;
        ForwardRow<P> r{step_row(pj, d, 3 * hid, u, steps, n, s), step_row(pj, d, 3 * hid, hid + u, steps, n, s),
                        step_row(pj, d, 3 * hid, 2 * hid + u, steps, n, s), step_row(g, d, 3 * hid, u, steps, n, s),
                        step_row(g, d, 3 * hid, hid + u, steps, n, s), step_row(g, d, 3 * hid, 2 * hid + u, steps, n, s),
                        hr, hr + hid * n, hr + 2 * hid * n, cur + row * n, next + row * n,
                        mirror == nullptr ? nullptr : mirror + row * n, kn + row * n, b[d * hid + u]};
        run_row(r, n);
      }
    });
  }
}

// Forward over all steps. gates (2, 3H, T, N): the input projections (r, z rows include b_hh),
// overwritten by the activations r, z, n. w_hh (2, 3H, H), b_hn (2, H). Training (`keep`): hs
// (T + 1, 2, H, N) gets every state, hs[0] = h0 given, and ghn (T, 2, H, N) gets W_hn h + b_hn of
// every step; inference: hs is a (2, 2, H, N) ping-pong pair with h0 in hs[0] and ghn a (1, 2, H, N)
// scratch. bf16 mode (`half`, `hb` non-empty): the projections are read from `half` (bfloat16, shaped
// as the gates), the hidden products take bfloat16 operands and give bfloat16 results, and `hb`
// (bfloat16, shaped as hs, hb[0] = h0 given) holds the states as they read them. Returns the last
// state (2, H, N), a view of hs.
at::Tensor forward_steps(at::Tensor gates, at::Tensor half, at::Tensor w_hh, at::Tensor b_hn, at::Tensor hs,
                         at::Tensor ghn, at::Tensor hb, bool keep) {
  check(gates, at::kFloat, "gates");
  check(w_hh, at::kFloat, "w_hh");
  check(hs, at::kFloat, "hs");
  check(ghn, at::kFloat, "ghn");
  const int64_t hid = w_hh.size(2), steps = gates.size(2), n = gates.size(3);
  TORCH_CHECK(gates.size(0) == 2 && gates.size(1) == 3 * hid && w_hh.size(0) == 2 && w_hh.size(1) == 3 * hid,
              "bad GRU shapes");
  TORCH_CHECK(hs.size(0) == (keep ? steps + 1 : 2) && hs.size(1) == 2 && hs.size(2) == hid && hs.size(3) == n,
              "hs has the wrong shape");
  TORCH_CHECK(ghn.size(0) == (keep ? steps : 1) && ghn.size(1) == 2 && ghn.size(2) == hid && ghn.size(3) == n,
              "ghn has the wrong shape");
  const at::Tensor bias = b_hn.contiguous();
  if (bf16_mode(half, gates, hb, hs))
    forward_loop<at::BFloat16>(gates, half, hs, hb, ghn, w_hh, bias.data_ptr<float>(), keep);
  else
    forward_loop<float>(gates, gates, hs, hb, ghn, w_hh, bias.data_ptr<float>(), keep);
  return hs[keep ? steps : steps % 2];
}

template <typename P>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_loop(const at::Tensor& grad_h, at::Tensor& gates,
                                                             const at::Tensor& half, const at::Tensor& ghn,
                                                             const at::Tensor& hs, const at::Tensor& hb,
                                                             const at::Tensor& w_hh) {
  constexpr bool bf16 = std::is_same_v<P, at::BFloat16>;
  const int64_t hid = w_hh.size(2), steps = gates.size(2), n = gates.size(3);
  const auto low = gates.options().dtype(bf16 ? at::kBFloat16 : at::kFloat);
  at::Tensor w_t = w_hh.transpose(1, 2).contiguous().to(low.dtype());  // (2, H, 3H)
  at::Tensor pair = at::empty({2, 2, hid, n}, gates.options());  // the direct part of dL/dh, ping-pong
  pair[0].copy_(grad_h);
  at::Tensor dgh = at::empty({2, 3 * hid, n}, low);
  at::Tensor prod = bf16 ? at::empty({2, hid, n}, low) : at::Tensor();  // W_hh^T dgh (bf16 mode)
  at::Tensor grad_w_hh = at::zeros({2, 3 * hid, hid}, gates.options());
  at::Tensor sum_n = at::zeros({2, hid, n}, gates.options());
  float* g = gates.data_ptr<float>();
  P* q = bf16 ? half.data_ptr<P>() : nullptr;
  P* dgp = dgh.data_ptr<P>();
  float* sum_p = sum_n.data_ptr<float>();
  for (int64_t s = steps - 1; s >= 0; --s) {
    at::Tensor dh = pair[(steps - 1 - s) % 2], dh_next = pair[(steps - s) % 2];
    const float* dhp = dh.data_ptr<float>();
    const P* prod_p = bf16 && s < steps - 1 ? prod.data_ptr<P>() : nullptr;
    float* dnp = dh_next.data_ptr<float>();
    const float* kn = ghn[s].data_ptr<float>();
    const float* hp = hs[s].data_ptr<float>();
    at::parallel_for(0, 2 * hid, 8, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t d = row / hid, u = row % hid;
        P* dr = dgp + (d * 3 * hid + u) * n;
        BackwardRow<P> r{step_row(g, d, 3 * hid, u, steps, n, s), step_row(g, d, 3 * hid, hid + u, steps, n, s),
                         step_row(g, d, 3 * hid, 2 * hid + u, steps, n, s),
                         q ? step_row(q, d, 3 * hid, u, steps, n, s) : nullptr,
                         q ? step_row(q, d, 3 * hid, hid + u, steps, n, s) : nullptr,
                         q ? step_row(q, d, 3 * hid, 2 * hid + u, steps, n, s) : nullptr,
                         kn + row * n, hp + row * n, dhp + row * n, prod_p ? prod_p + row * n : nullptr,
                         dnp + row * n, dr, dr + hid * n, dr + 2 * hid * n, sum_p + row * n};
        run_row(r, n);
      }
    });
    // Per step, on contiguous operands: one product over all steps' columns at once measured slower.
    if (bf16) {
      grad_w_hh.add_(at::bmm(dgh, hb[s].transpose(1, 2)));
      at::bmm_out(prod, w_t, dgh);  // W_hh^T dL/d(W_hh h), read by the next pass (or added below)
    } else {
      grad_w_hh.baddbmm_(dgh, hs[s].transpose(1, 2));
      at::baddbmm_out(dh_next, dh_next, w_t, dgh);  // + W_hh^T dL/d(W_hh h)
    }
  }
  at::Tensor dh0 = pair[steps % 2].clone();
  if (bf16) dh0.add_(prod);
  at::Tensor sums = at::matmul(sum_n, at::ones({n}, gates.options()));  // row sums as a product
  return {dh0, grad_w_hh, sums};
}

// BPTT over all steps, reading what forward_steps kept (gates, ghn, hs; hb in bf16 mode). grad_h
// (2, H, N): dL/d(last state). Overwrites gates (and `half` in bf16 mode) with the gradients of the
// gate pre-activations (what the input-weight gradient reads). Returns (dL/dh0 (2, H, N),
// grad w_hh (2, 3H, H), sum over steps and samples of dL/d(W_hn h + b_hn) (2, H)).
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_steps(at::Tensor grad_h, at::Tensor gates, at::Tensor half,
                                                              at::Tensor ghn, at::Tensor hs, at::Tensor hb,
                                                              at::Tensor w_hh) {
  check(gates, at::kFloat, "gates");
  check(ghn, at::kFloat, "ghn");
  check(hs, at::kFloat, "hs");
  const int64_t hid = w_hh.size(2), steps = gates.size(2), n = gates.size(3);
  TORCH_CHECK(hs.size(0) == steps + 1 && ghn.size(0) == steps && grad_h.sizes() == at::IntArrayRef({2, hid, n}),
              "backward_steps: buffers do not match the gates");
  if (bf16_mode(half, gates, hb, hs)) return backward_loop<at::BFloat16>(grad_h, gates, half, ghn, hs, hb, w_hh);
  return backward_loop<float>(grad_h, gates, half, ghn, hs, hb, w_hh);
}

}  // namespace

TORCH_LIBRARY(lrnet_gru, m) {
  m.def("forward_steps(Tensor(a!) gates, Tensor half, Tensor w_hh, Tensor b_hn, Tensor(b!) hs, Tensor(c!) ghn, "
        "Tensor(d!) hb, bool keep) -> Tensor");
  m.def("backward_steps(Tensor grad_h, Tensor(a!) gates, Tensor(b!) half, Tensor ghn, Tensor hs, Tensor hb, "
        "Tensor w_hh) -> (Tensor, Tensor, Tensor)");
  m.impl("forward_steps", c10::DispatchKey::CPU, TORCH_FN(forward_steps));
  m.impl("backward_steps", c10::DispatchKey::CPU, TORCH_FN(backward_steps));
}
