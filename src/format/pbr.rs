//! A catalog entry's `mat_vis.pbr` block: the scalar appearance of a
//! material, used where it has no texture (and for scalar-only sources).

use serde_json::{Map, Value};

use super::json_type;

/// The usable values of one `mat_vis.pbr` block. Every value is finite and
/// inside the range its key allows; anything else in the catalog is left
/// out (as `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pbr {
    /// Base colour, sRGB-encoded, each component in 0..=1.
    pub color_rgb: Option<[f32; 3]>,
    pub roughness: Option<f32>,
    pub metalness: Option<f32>,
    pub ior: Option<f32>,
    /// Reflectance at normal incidence (0..=1).
    pub specular_f0: Option<f32>,
    pub transmission: Option<f32>,
    /// Thickness of a transmissive volume, in scene units.
    pub thickness: Option<f32>,
    pub dispersion: Option<f32>,
    pub clearcoat: Option<f32>,
    pub clearcoat_roughness: Option<f32>,
    pub specular_intensity: Option<f32>,
    /// Emitted colour, linear, each component at least 0.
    pub emissive: Option<[f32; 3]>,
}

// Sound because the parser stores finite values only (no NaN).
impl Eq for Pbr {}

/// A numeric key of the block and the values it accepts.
struct NumberKey {
    key: &'static str,
    min: f32,
    /// Inclusive; `f32::MAX` for no upper bound.
    max: f32,
    /// Whether `min` itself is excluded (an IOR of 0 means nothing).
    above_min: bool,
    slot: fn(&mut Pbr) -> &mut Option<f32>,
}

const UNIT: (f32, f32) = (0.0, 1.0);
const OPEN: (f32, f32) = (0.0, f32::MAX);

macro_rules! number_key {
    ($key:ident, $range:expr, $above_min:expr) => {
        NumberKey {
            key: stringify!($key),
            min: $range.0,
            max: $range.1,
            above_min: $above_min,
            slot: |pbr| &mut pbr.$key,
        }
    };
}

/// The numeric keys the reference client reads from the block.
const NUMBER_KEYS: [NumberKey; 10] = [
    number_key!(roughness, UNIT, false),
    number_key!(metalness, UNIT, false),
    number_key!(ior, OPEN, true),
    number_key!(specular_f0, UNIT, false),
    number_key!(transmission, UNIT, false),
    number_key!(thickness, OPEN, false),
    number_key!(dispersion, OPEN, false),
    number_key!(clearcoat, UNIT, false),
    number_key!(clearcoat_roughness, UNIT, false),
    number_key!(specular_intensity, OPEN, false),
];

/// Parses the block; each unusable value gets a reason in `skipped`.
/// Missing keys and nulls are normal and leave no reason.
pub(super) fn parse_pbr(id: &str, block: &Map<String, Value>, skipped: &mut Vec<String>) -> Pbr {
    let mut pbr = Pbr::default();
    for spec in &NUMBER_KEYS {
        let Some(value) = block.get(spec.key).filter(|v| !v.is_null()) else {
            continue;
        };
        match number_in(value, spec.min, spec.max, spec.above_min) {
            Ok(number) => *(spec.slot)(&mut pbr) = Some(number),
            Err(reason) => skipped.push(format!(
                "material {id:?}: mat_vis.pbr.{} {reason}",
                spec.key
            )),
        }
    }
    let colours: [(&str, f32, &mut Option<[f32; 3]>); 2] = [
        ("color_rgb", 1.0, &mut pbr.color_rgb),
        ("emissive", f32::MAX, &mut pbr.emissive),
    ];
    for (key, max, slot) in colours {
        let Some(value) = block.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        match colour_in(value, max) {
            Ok(colour) => *slot = Some(colour),
            Err(reason) => skipped.push(format!("material {id:?}: mat_vis.pbr.{key} {reason}")),
        }
    }
    // With `metalness_source: "texture"` the metalness value is a neutral
    // multiplier for a metalness map, not the material's metalness: used
    // as a constant it would turn a material whose tier lacks the map
    // into metal.
    if block.get("metalness_source").and_then(Value::as_str) == Some("texture") {
        pbr.metalness = None;
    }
    pbr
}

/// A finite number inside `min..=max` (or `min < n` with `above_min`),
/// narrowed to f32.
fn number_in(value: &Value, min: f32, max: f32, above_min: bool) -> Result<f32, String> {
    let Some(wide) = value.as_f64() else {
        return Err(format!("is {}, not a number", json_type(value)));
    };
    // Adding 0 turns -0 (from tiny negatives) into 0: documents show "0".
    let number = wide as f32 + 0.0;
    let low_ok = if above_min {
        number > min
    } else {
        number >= min
    };
    if !number.is_finite() || !low_ok || number > max {
        let range = match (above_min, max == f32::MAX) {
            (false, false) => format!("{min}..={max}"),
            (false, true) => format!("at least {min}"),
            (true, _) => format!("above {min}"),
        };
        return Err(format!("{wide} is not {range}"));
    }
    Ok(number)
}

/// `[r, g, b]`, each in `0..=max`. A fourth value (alpha) is accepted and
/// ignored, as the reference client reads only the first three.
fn colour_in(value: &Value, max: f32) -> Result<[f32; 3], String> {
    let Value::Array(items) = value else {
        return Err(format!("is {}, not [r, g, b]", json_type(value)));
    };
    if !(3..=4).contains(&items.len()) {
        return Err(format!("has {} values, not [r, g, b]", items.len()));
    }
    let mut colour = [0.0; 3];
    for (slot, item) in colour.iter_mut().zip(items) {
        *slot = number_in(item, 0.0, max, false).map_err(|e| format!("component {e}"))?;
    }
    Ok(colour)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(block: &str) -> (Pbr, Vec<String>) {
        let Value::Object(map) = serde_json::from_str(block).unwrap() else {
            panic!("not an object")
        };
        let mut skipped = Vec::new();
        (parse_pbr("m", &map, &mut skipped), skipped)
    }

    #[test]
    fn reads_every_known_key() {
        let (pbr, skipped) = parse(
            r#"{"color_rgb": [0.5, 0.25, 1], "roughness": 0.3, "metalness": 1,
                "ior": 1.45, "specular_f0": 0.04, "transmission": 0.9, "thickness": 2.5,
                "dispersion": 0.1, "clearcoat": 0.7, "clearcoat_roughness": 0.2,
                "specular_intensity": 1.5, "emissive": [2, 0, 0.5], "unknown": "kept quiet"}"#,
        );
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            pbr,
            Pbr {
                color_rgb: Some([0.5, 0.25, 1.0]),
                roughness: Some(0.3),
                metalness: Some(1.0),
                ior: Some(1.45),
                specular_f0: Some(0.04),
                transmission: Some(0.9),
                thickness: Some(2.5),
                dispersion: Some(0.1),
                clearcoat: Some(0.7),
                clearcoat_roughness: Some(0.2),
                specular_intensity: Some(1.5),
                emissive: Some([2.0, 0.0, 0.5]),
            }
        );
    }

    #[test]
    fn nulls_and_missing_keys_are_silent() {
        let (pbr, skipped) = parse(r#"{"roughness": null, "color_rgb": null}"#);
        assert_eq!(pbr, Pbr::default());
        assert!(skipped.is_empty());
    }

    #[test]
    fn bad_values_are_left_out_and_the_rest_kept() {
        let (pbr, skipped) = parse(
            r#"{"roughness": "0.5", "metalness": 1.5, "ior": 0, "transmission": -0.1,
                "thickness": 1e300, "clearcoat": true, "clearcoat_roughness": [0.1],
                "specular_intensity": {"v": 1}, "dispersion": -1,
                "color_rgb": [0.5, 0.5], "emissive": [1, "x", 0],
                "specular_f0": 0.04}"#,
        );
        assert_eq!(
            pbr,
            Pbr {
                specular_f0: Some(0.04),
                ..Pbr::default()
            }
        );
        assert_eq!(skipped.len(), 11, "{skipped:#?}");
        assert!(
            skipped
                .iter()
                .all(|s| s.starts_with("material \"m\": mat_vis.pbr."))
        );
    }

    #[test]
    fn colours_accept_an_ignored_alpha_and_refuse_other_lengths() {
        let (pbr, skipped) =
            parse(r#"{"color_rgb": [0.1, 0.2, 0.3, 0.5], "emissive": [1, 2, 3, 4, 5]}"#);
        assert_eq!(pbr.color_rgb, Some([0.1, 0.2, 0.3]));
        assert_eq!(pbr.emissive, None);
        assert_eq!(skipped.len(), 1);
        let (pbr, _) = parse(r#"{"color_rgb": [1.5, 0, 0]}"#);
        assert_eq!(pbr.color_rgb, None, "sRGB components are at most 1");
    }

    #[test]
    fn metalness_that_only_scales_a_map_is_not_a_constant() {
        let (pbr, skipped) =
            parse(r#"{"metalness": 1.0, "metalness_source": "texture", "roughness": 1}"#);
        assert_eq!(pbr.metalness, None);
        assert_eq!(pbr.roughness, Some(1.0));
        assert!(skipped.is_empty());
        let (pbr, _) = parse(r#"{"metalness": 1.0, "metalness_source": "catalog"}"#);
        assert_eq!(pbr.metalness, Some(1.0));
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            any::<i64>().prop_map(|i| Value::Number(i.into())),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((".{0,4}", inner), 0..3)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    const KEYS: [&str; 13] = [
        "color_rgb",
        "roughness",
        "metalness",
        "ior",
        "specular_f0",
        "transmission",
        "thickness",
        "dispersion",
        "clearcoat",
        "clearcoat_roughness",
        "specular_intensity",
        "emissive",
        "metalness_source",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the block holds, parsing never panics and what it keeps
        /// is finite and in range; every non-null value is either kept or
        /// has a reason.
        #[test]
        fn hostile_blocks_give_only_sane_values(
            values in prop::collection::vec((0usize..KEYS.len(), any_json()), 0..16)
        ) {
            let block: Map<String, Value> =
                values.into_iter().map(|(k, v)| (KEYS[k].to_string(), v)).collect();
            let mut skipped = Vec::new();
            let pbr = parse_pbr("m", &block, &mut skipped);
            let unit = |v: Option<f32>| v.is_none_or(|v| (0.0..=1.0).contains(&v));
            prop_assert!(unit(pbr.roughness) && unit(pbr.metalness) && unit(pbr.transmission));
            prop_assert!(unit(pbr.clearcoat) && unit(pbr.clearcoat_roughness) && unit(pbr.specular_f0));
            prop_assert!(pbr.ior.is_none_or(|v| v > 0.0 && v.is_finite()));
            for v in [pbr.thickness, pbr.dispersion, pbr.specular_intensity].into_iter().flatten() {
                prop_assert!(v >= 0.0 && v.is_finite());
            }
            for c in pbr.color_rgb.into_iter().flatten() {
                prop_assert!((0.0..=1.0).contains(&c));
            }
            for c in pbr.emissive.into_iter().flatten() {
                prop_assert!(c >= 0.0 && c.is_finite());
            }
            let given = block
                .iter()
                .filter(|(k, v)| k.as_str() != "metalness_source" && !v.is_null())
                .count();
            let kept = [
                pbr.roughness, pbr.ior, pbr.specular_f0, pbr.transmission, pbr.thickness,
                pbr.dispersion, pbr.clearcoat, pbr.clearcoat_roughness, pbr.specular_intensity,
            ]
            .iter()
            .filter(|v| v.is_some())
            .count()
                + usize::from(pbr.color_rgb.is_some())
                + usize::from(pbr.emissive.is_some())
                + usize::from(block
                    .get("metalness")
                    .and_then(Value::as_f64)
                    .is_some_and(|m| (0.0..=1.0).contains(&(m as f32))));
            prop_assert_eq!(kept + skipped.len(), given, "{:?} {:?}", block, skipped);
        }
    }
}
