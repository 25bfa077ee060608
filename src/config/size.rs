//! The toolbox's model size names (`MODEL.TYPE`), read as a family, a width and a depth:
//! `deit_tiny_patch16_224_L6` is a vit of width 192 with 6 layers, `aux_deit_small_patch16_224`
//! the aux net of a DeiT-S. Names of other families carry only the depth (`smollm2_L12`); their
//! width is the gene's.

/// What a size name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeName {
    /// `vit` when the name is a DeiT/ViT size; `None` when it does not say.
    pub family: Option<&'static str>,
    /// Hidden width, when the name says.
    pub width: Option<usize>,
    /// Attention heads, when the name says.
    pub heads: Option<usize>,
    /// Layers (`_L<N>`), when the name says.
    pub depth: Option<usize>,
    /// Patch side (`patch16`), when the name says.
    pub patch: Option<usize>,
    /// Input side (`_224`), when the name says.
    pub image: Option<usize>,
    /// The name starts with `aux_` (the aux net of TLEG/SWS).
    pub aux: bool,
}

/// DeiT/ViT widths and heads by size word (DeiT paper, table 1).
const VIT_SIZES: &[(&str, usize, usize)] = &[
    ("tiny", 192, 3),
    ("small", 384, 6),
    ("base", 768, 12),
    ("large", 1024, 16),
];

fn digits_after(part: &str, prefix: &str) -> Option<usize> {
    part.strip_prefix(prefix)
        .filter(|d| !d.is_empty())
        .and_then(|d| d.parse().ok())
}

/// Read a size name; `None` when it is not of the `<name>[_L<N>]` form at all.
pub fn parse(name: &str) -> Option<SizeName> {
    let mut parts: Vec<&str> = name.split('_').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return None;
    }
    let aux = parts.first() == Some(&"aux");
    if aux {
        parts.remove(0);
    }
    let depth = parts.last().and_then(|p| digits_after(p, "L"));
    if depth.is_some() {
        parts.pop();
    }
    let mut size = SizeName {
        family: None,
        width: None,
        heads: None,
        depth,
        patch: None,
        image: None,
        aux,
    };
    if matches!(parts.first(), Some(&"deit") | Some(&"vit")) {
        size.family = Some("vit");
        for part in &parts[1..] {
            if let Some(&(_, w, h)) = VIT_SIZES.iter().find(|(word, _, _)| word == part) {
                size.width = Some(w);
                size.heads = Some(h);
            } else if let Some(p) = digits_after(part, "patch") {
                size.patch = Some(p);
            } else if let Ok(side) = part.parse::<usize>() {
                size.image = Some(side);
            }
        }
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deit_names_give_width_heads_depth_patch_and_side() {
        let s = parse("deit_tiny_patch16_224_L6").expect("parses");
        assert_eq!(s.family, Some("vit"));
        assert_eq!((s.width, s.heads, s.depth), (Some(192), Some(3), Some(6)));
        assert_eq!((s.patch, s.image, s.aux), (Some(16), Some(224), false));
        let aux = parse("aux_deit_small_patch16_224").expect("parses");
        assert!(aux.aux);
        assert_eq!((aux.width, aux.depth), (Some(384), None));
    }

    #[test]
    fn other_names_carry_only_the_depth() {
        let s = parse("smollm2_L12").expect("parses");
        assert_eq!((s.family, s.width, s.depth), (None, None, Some(12)));
        assert_eq!(parse("minilm").map(|s| s.depth), Some(None));
        assert_eq!(parse("_"), None);
    }
}
