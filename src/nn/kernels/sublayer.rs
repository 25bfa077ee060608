//! A pre-norm residual sublayer `h + out(mix(in(LayerNorm(h))))` as one op: the attention half
//! of a ViT block (`in` the packed qkv projection, `mix` attention) or its MLP half (`in` the
//! up projection, `mix` GELU).
//!
//! Written out, the sublayer is a dozen graph edges that carry activation-sized gradients
//! (the norm's output, the projections, the mixer, the residual add), and candle's backward pass
//! gives each a zero-filled buffer and an add. As one op the graph keeps two edges: the input
//! `h` and one vector of the sublayer's weights, concatenated by the caller so that each
//! weight, however the parametrisation computes it, still receives its gradient through the
//! concatenation. The forward pass keeps the normed input, the projection and the mixer's
//! output (what the written-out graph keeps); the backward pass runs the kernels' own gradient
//! functions on them, and `dh` is the residual's gradient plus the norm's, in one buffer.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::attention::{AttentionSpec, PackedAttention};
use super::elementwise::{Binary, zip_map_par};
use super::gelu::{gelu_grads, gelu_values};
use super::layer_norm::{layer_norm_grads, layer_norm_rows};
use super::linear::{add_bias, column_sums, linear_grads, product};
use super::{host, slice, tensor, wants_grad};

/// What mixes the projected rows of a sublayer.
pub(crate) enum Mixer {
    /// Attention over the packed qkv projection.
    Attention(AttentionSpec),
    /// GELU (erf) of every element.
    Gelu,
}

/// The weights of a sublayer, each f32 on the CPU: the norm's weight and bias `[d]`, the input
/// projection `[inner, d]` and bias `[inner]`, the output projection `[d, mixed]` and bias
/// `[d]` (`mixed` is `inner` for GELU and the query width for attention).
pub(crate) struct SublayerWeights<'a> {
    pub norm: (&'a Tensor, &'a Tensor),
    pub input: (&'a Tensor, &'a Tensor),
    pub output: (&'a Tensor, &'a Tensor),
}

/// The sizes of one call.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: usize,
    seq: usize,
    width: usize,
    inner: usize,
    mixed: usize,
}

impl Sizes {
    fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// The lengths of the weights in the concatenated vector, in order: norm weight and bias,
    /// input projection and bias, output projection and bias.
    fn pieces(&self) -> [usize; 6] {
        let (d, i, m) = (self.width, self.inner, self.mixed);
        [d, d, i * d, i, d * m, d]
    }

    /// Where each weight starts in the concatenated vector.
    fn offsets(&self) -> [usize; 6] {
        let mut at = 0;
        self.pieces().map(|n| {
            let start = at;
            at += n;
            start
        })
    }
}

/// What the forward pass keeps for the backward pass, each row-major over the rows.
struct Saved {
    normed: Vec<f32>,
    projected: Vec<f32>,
    mixed: Vec<f32>,
}

/// The mixer as it runs: attention keeps its logsumexp in its own op.
enum MixerOp {
    Attention(PackedAttention),
    Gelu,
}

struct Sublayer {
    mixer: MixerOp,
    sizes: Sizes,
    eps: f32,
    /// Keep the activations for a backward pass (off when nothing needs a gradient).
    save: bool,
    saved: Mutex<Option<Saved>>,
}

/// `a + b`.
struct Plus;

impl Binary for Plus {
    #[inline(always)]
    fn apply(&self, a: f32, b: f32) -> f32 {
        a + b
    }
}

/// The f32 values of a CPU storage the kernels produced.
fn values(s: CpuStorage, what: &str) -> candle_core::Result<Vec<f32>> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("sublayer: the {what} is not f32"),
    }
}

impl Sublayer {
    /// The weight matrix `[rows, cols]` at `offset` of the concatenated weights `(ps, pl)`,
    /// as a view.
    fn matrix(pl: &Layout, offset: usize, rows: usize, cols: usize) -> Layout {
        Layout::new(
            Shape::from((rows, cols)),
            vec![cols, 1],
            pl.start_offset() + offset,
        )
    }

    /// The mixer's output `[rows, mixed]` of the projection `[rows, inner]`.
    fn mix(&self, projected: Vec<f32>) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let s = self.sizes;
        match &self.mixer {
            MixerOp::Gelu => {
                let mixed = gelu_values(&projected);
                Ok((projected, mixed))
            }
            MixerOp::Attention(op) => {
                let layout = Layout::contiguous(Shape::from((s.batch, s.seq, s.inner)));
                let storage = CpuStorage::F32(projected);
                let (out, _) = op.cpu_fwd(&storage, &layout)?;
                Ok((values(storage, "projection")?, values(out, "attention")?))
            }
        }
    }

    /// The gradient of the projection from the gradient of the mixer's output.
    fn mix_grads(&self, projected: &Tensor, d_mixed: &Tensor) -> candle_core::Result<Vec<f32>> {
        let s = self.sizes;
        match &self.mixer {
            MixerOp::Gelu => {
                let (x, g) = (host(projected)?, host(d_mixed)?);
                Ok(gelu_grads(x.as_slice()?, g.as_slice()?))
            }
            MixerOp::Attention(op) => {
                let qkv = projected.reshape((s.batch, s.seq, s.inner))?;
                let g = d_mixed.reshape((s.batch, s.seq, s.mixed))?;
                op.grads(&qkv, &g)
            }
        }
    }
}

impl CustomOp2 for Sublayer {
    fn name(&self) -> &'static str {
        "lgreg-pre-norm-sublayer"
    }

    fn cpu_fwd(
        &self,
        hs: &CpuStorage,
        hl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = self.sizes;
        let h = slice(hs, hl, "sublayer")?;
        let p = slice(ps, pl, "sublayer")?;
        let [norm_w, norm_b, w_in, b_in, w_out, b_out] = self.sizes.offsets();
        let d = s.width;
        let normed = layer_norm_rows(h, &p[norm_w..norm_w + d], &p[norm_b..norm_b + d], self.eps);
        let normed = CpuStorage::F32(normed);
        let rows = Layout::contiguous(Shape::from((s.rows(), d)));
        let w = Self::matrix(pl, w_in, s.inner, d);
        let mut projected = values(product(&normed, &rows, ps, &w)?.0, "projection")?;
        add_bias(&mut projected, &p[b_in..b_in + s.inner], None);
        let (projected, mixed) = self.mix(projected)?;
        let mixed = CpuStorage::F32(mixed);
        let mixed_rows = Layout::contiguous(Shape::from((s.rows(), s.mixed)));
        let w = Self::matrix(pl, w_out, d, s.mixed);
        let mut out = values(product(&mixed, &mixed_rows, ps, &w)?.0, "output")?;
        add_bias(&mut out, &p[b_out..b_out + d], Some(h));
        if self.save
            && let Ok(mut saved) = self.saved.lock()
        {
            *saved = Some(Saved {
                normed: values(normed, "norm")?,
                projected,
                mixed: values(mixed, "mixer")?,
            });
        }
        Ok((CpuStorage::F32(out), hl.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().ok().and_then(|mut s| s.take());
        let Some(saved) = saved else {
            candle_core::bail!("sublayer: backward before forward");
        };
        let s = self.sizes;
        let (rows, d) = (s.rows(), s.width);
        let g = g.detach().contiguous()?.reshape((rows, d))?;
        let weights = params.detach();
        let [norm_w, _, w_in, _, w_out, _] = s.offsets();
        let matrix = |at: usize, r: usize, c: usize| weights.narrow(0, at, r * c)?.reshape((r, c));
        let gh = host(&g)?;
        let db_out = column_sums(gh.as_slice()?, d);
        let mixed = tensor(saved.mixed, (rows, s.mixed))?;
        let (d_mixed, dw_out) =
            linear_grads(&mixed, &matrix(w_out, d, s.mixed)?, &g, (true, true))?;
        let projected = tensor(saved.projected, (rows, s.inner))?;
        let d_projected = tensor(
            self.mix_grads(&projected, &required(d_mixed)?)?,
            (rows, s.inner),
        )?;
        let db_in = column_sums(host(&d_projected)?.as_slice()?, s.inner);
        let normed = tensor(saved.normed, (rows, d))?;
        let (d_normed, dw_in) = linear_grads(
            &normed,
            &matrix(w_in, s.inner, d)?,
            &d_projected,
            (true, true),
        )?;
        let d_normed = required(d_normed)?;
        let (dx, dnorm_w, dnorm_b) = {
            let (x, w, dn) = (host(h)?, host(&weights)?, host(&d_normed)?);
            let norm = &w.as_slice()?[norm_w..norm_w + d];
            layer_norm_grads(x.as_slice()?, norm, dn.as_slice()?, self.eps)
        };
        let dh = if wants_grad(h) {
            let dh = zip_map_par(&dx, gh.as_slice()?, Plus);
            Some(tensor(dh, h.shape().clone())?)
        } else {
            None
        };
        let dparams = if wants_grad(params) {
            let mut all = Vec::with_capacity(params.elem_count());
            all.extend_from_slice(&dnorm_w);
            all.extend_from_slice(&dnorm_b);
            all.extend_from_slice(host(&required(dw_in)?)?.as_slice()?);
            all.extend_from_slice(&db_in);
            all.extend_from_slice(host(&required(dw_out)?)?.as_slice()?);
            all.extend_from_slice(&db_out);
            Some(tensor(all, params.shape().clone())?)
        } else {
            None
        };
        Ok((dh, dparams))
    }
}

/// A gradient [`linear_grads`] was asked for.
fn required(t: Option<Tensor>) -> candle_core::Result<Tensor> {
    t.map_or_else(
        || candle_core::bail!("sublayer: a requested gradient is missing"),
        Ok,
    )
}

/// `h + out(mix(in(LayerNorm(h))))` for `h [batch, seq, width]`, every tensor f32 on the CPU;
/// see the module documentation. Refuses weights whose shapes do not fit `h` and the mixer.
pub(crate) fn pre_norm_sublayer(
    h: &Tensor,
    w: &SublayerWeights<'_>,
    mixer: Mixer,
    eps: f64,
) -> candle_core::Result<Tensor> {
    let (batch, seq, width) = h.dims3()?;
    let (inner, d_in) = w.input.0.dims2()?;
    let (d_out, mixed) = w.output.0.dims2()?;
    let expected_mixed = match &mixer {
        Mixer::Gelu => inner,
        Mixer::Attention(spec) => {
            let parts = spec.heads + 2 * spec.kv_heads;
            if parts == 0 || !inner.is_multiple_of(parts) {
                candle_core::bail!("sublayer: a qkv width of {inner} for {} heads", spec.heads);
            }
            spec.heads * inner / parts
        }
    };
    let vector = |t: &Tensor, n: usize| t.dims1().is_ok_and(|m| m == n);
    if d_in != width
        || d_out != width
        || mixed != expected_mixed
        || !vector(w.norm.0, width)
        || !vector(w.norm.1, width)
        || !vector(w.input.1, inner)
        || !vector(w.output.1, width)
    {
        candle_core::bail!(
            "sublayer: weights {:?}, {:?} do not fit a width of {width}",
            w.input.0.dims(),
            w.output.0.dims()
        );
    }
    let params = Tensor::cat(
        &[
            w.norm.0.clone(),
            w.norm.1.clone(),
            w.input.0.flatten_all()?,
            w.input.1.clone(),
            w.output.0.flatten_all()?,
            w.output.1.clone(),
        ],
        0,
    )?;
    let h = h.contiguous()?;
    let op = Sublayer {
        mixer: match mixer {
            Mixer::Attention(spec) => MixerOp::Attention(PackedAttention::new(spec)),
            Mixer::Gelu => MixerOp::Gelu,
        },
        sizes: Sizes {
            batch,
            seq,
            width,
            inner,
            mixed,
        },
        eps: eps as f32,
        save: wants_grad(&h) || wants_grad(&params),
        saved: Mutex::new(None),
    };
    h.apply_op2(&params, op)
}
