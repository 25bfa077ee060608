//! TLEG's aux net: every layer tensor of virtual layer `l` of `L` is `B + (l/L)·A`, with `A`
//! and `B` the trained variables, started at random (the paper) or on the least-squares line
//! through the teacher's layers (a warm start).

use candle_core::Tensor;

use super::fit::{Grid, LineFit};
use super::{BASE_UNIT, GRID, SLOPE_UNIT};
use crate::algorithm::ancestor::AncestorModel;
use crate::algorithm::builder::GeneBuilder;
use crate::algorithm::faithful::{
    AuxInit, AuxNet, AuxRequest, block_values, flat_at_init, globals_of, in_layer, need,
    random_blocks, require_teacher_shapes, teacher_plain,
};
use crate::error::Result;
use crate::nn::param::{LinearExpanded, Parametrisation, Plain, Store};

/// The trainable linear expansion.
struct TlegAux(LinearExpanded);

impl AuxNet for TlegAux {
    fn params(&self) -> Box<dyn Parametrisation> {
        Box::new(self.0.clone())
    }

    fn write_units(&self, aux: &AncestorModel<'_>, out: &mut GeneBuilder) -> Result<()> {
        out.put_layer(BASE_UNIT, aux, &block_values(&self.0.base, 0)?)?;
        out.put_layer(SLOPE_UNIT, aux, &block_values(&self.0.slope, 0)?)?;
        out.diagnostic("aux_depth", self.0.depth)?;
        out.diagnostic("grid", GRID)
    }
}

/// Build TLEG's aux net for `request`.
pub(super) fn aux_net(request: &AuxRequest<'_>) -> Result<Box<dyn AuxNet>> {
    let line = match request.init {
        AuxInit::Random => random_line(request)?,
        AuxInit::Fit | AuxInit::Select => fitted_line(request)?,
    };
    Ok(Box::new(TlegAux(line)))
}

/// The paper's start: B and A of the weights drawn as two independent random blocks, norms at
/// B = 1 and A = 0, biases 0.
fn random_line(request: &AuxRequest<'_>) -> Result<LinearExpanded> {
    let plain = random_blocks(request, 2)?;
    let (mut base, mut slope) = (Store::new(), Store::new());
    for (slot, name, var) in plain.store.iter().filter(|(s, _, _)| s.layer == Some(0)) {
        let b = var.as_tensor();
        let a = if flat_at_init(slot) {
            b.zeros_like()?
        } else {
            need(&plain.store, &in_layer(slot, 1))?
        };
        base.insert(slot.clone(), &format!("tleg.base.{name}"), b)?;
        slope.insert(slot.clone(), &format!("tleg.slope.{name}"), &a)?;
    }
    Ok(LinearExpanded {
        globals: globals_of(&plain)?,
        base,
        slope,
        depth: request.config.layers,
    })
}

/// The warm start: the teacher's globals, and the least-squares line through its layers
/// (`t_l = l / L_teacher`), tensor by tensor.
fn fitted_line(request: &AuxRequest<'_>) -> Result<LinearExpanded> {
    require_teacher_shapes(request)?;
    let teacher: Plain = teacher_plain(request.teacher, request.config)?;
    let depth = teacher.store.layers();
    let grid = Grid::new(depth);
    let (mut base, mut slope) = (Store::new(), Store::new());
    for (slot, name, var) in teacher.store.iter().filter(|(s, _, _)| s.layer == Some(0)) {
        let mut fit = LineFit::new(var.elem_count());
        for l in 0..depth {
            let w: Vec<f32> = need(&teacher.store, &in_layer(slot, l))?
                .flatten_all()?
                .to_vec1()?;
            fit.add(&w, grid.t(l));
        }
        let line = fit.solve(grid);
        let shape = var.dims();
        let device = var.device();
        let b = Tensor::from_vec(line.base, shape, device)?;
        let a = Tensor::from_vec(line.slope, shape, device)?;
        base.insert(slot.clone(), &format!("tleg.base.{name}"), &b)?;
        slope.insert(slot.clone(), &format!("tleg.slope.{name}"), &a)?;
    }
    Ok(LinearExpanded {
        globals: globals_of(&teacher)?,
        base,
        slope,
        depth: request.config.layers,
    })
}
