//! `.cube` LUTs as OpenColorIO's `ociobakelut` bakes them (`--format resolve_cube` or
//! `iridas_cube`): a 1D LUT, a 3D LUT, or a 1D shaper followed by a 3D LUT, with their input
//! ranges (`LUT_1D_INPUT_RANGE`, `LUT_3D_INPUT_RANGE`, or `DOMAIN_MIN`/`DOMAIN_MAX`). A
//! malformed file is refused naming its line: a truncated or overlong table, a size out of
//! range, a domain whose minimum is not below its maximum, a value that is not finite.

use std::str::FromStr;

use crate::error::{Error, Result};

/// How a 3D LUT is sampled between its grid points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// Four grid points per sample (what OpenColorIO and Resolve use by default).
    #[default]
    Tetrahedral,
    /// Eight grid points per sample.
    Trilinear,
}

impl FromStr for Interpolation {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, Self::Err> {
        match name {
            "tetrahedral" => Ok(Self::Tetrahedral),
            "trilinear" => Ok(Self::Trilinear),
            other => Err(format!(
                "`{other}` is not an interpolation (tetrahedral or trilinear)"
            )),
        }
    }
}

/// The largest tables read: a 1D LUT of 65536 entries, a 3D LUT of 256 per side.
const MAX_1D: usize = 65_536;
const MAX_3D: usize = 256;

/// A per-channel table over an input range.
#[derive(Debug, Clone)]
struct Table1d {
    min: [f32; 3],
    max: [f32; 3],
    entries: Vec<[f32; 3]>,
}

impl Table1d {
    fn apply(&self, rgb: [f32; 3]) -> [f32; 3] {
        let last = (self.entries.len() - 1) as f32;
        std::array::from_fn(|c| {
            let t = ((rgb[c] - self.min[c]) / (self.max[c] - self.min[c])).clamp(0.0, 1.0) * last;
            let i = (t.floor() as usize).min(self.entries.len() - 2);
            let f = t - i as f32;
            self.entries[i][c] + f * (self.entries[i + 1][c] - self.entries[i][c])
        })
    }
}

/// A lattice of `size`³ colours, red fastest, over an input range.
#[derive(Debug, Clone)]
struct Table3d {
    min: [f32; 3],
    max: [f32; 3],
    size: usize,
    entries: Vec<[f32; 3]>,
}

impl Table3d {
    fn at(&self, r: usize, g: usize, b: usize) -> [f32; 3] {
        self.entries[r + self.size * (g + self.size * b)]
    }

    fn apply(&self, rgb: [f32; 3], interpolation: Interpolation) -> [f32; 3] {
        let last = (self.size - 1) as f32;
        let mut base = [0usize; 3];
        let mut frac = [0f32; 3];
        for c in 0..3 {
            let t = ((rgb[c] - self.min[c]) / (self.max[c] - self.min[c])).clamp(0.0, 1.0) * last;
            base[c] = (t.floor() as usize).min(self.size - 2);
            frac[c] = t - base[c] as f32;
        }
        let [r, g, b] = base;
        let corner = |dr: usize, dg: usize, db: usize| self.at(r + dr, g + dg, b + db);
        let [fr, fg, fb] = frac;
        let mix = |steps: [([f32; 3], f32); 3], origin: [f32; 3]| {
            // origin + sum of weight * (next corner - previous corner) along a path.
            let mut out = origin;
            let mut from = origin;
            for (to, weight) in steps {
                for c in 0..3 {
                    out[c] += weight * (to[c] - from[c]);
                }
                from = to;
            }
            out
        };
        let c000 = corner(0, 0, 0);
        let c111 = corner(1, 1, 1);
        match interpolation {
            Interpolation::Tetrahedral => {
                let path = if fr > fg {
                    if fg > fb {
                        [(corner(1, 0, 0), fr), (corner(1, 1, 0), fg), (c111, fb)]
                    } else if fr > fb {
                        [(corner(1, 0, 0), fr), (corner(1, 0, 1), fb), (c111, fg)]
                    } else {
                        [(corner(0, 0, 1), fb), (corner(1, 0, 1), fr), (c111, fg)]
                    }
                } else if fb > fg {
                    [(corner(0, 0, 1), fb), (corner(0, 1, 1), fg), (c111, fr)]
                } else if fb > fr {
                    [(corner(0, 1, 0), fg), (corner(0, 1, 1), fb), (c111, fr)]
                } else {
                    [(corner(0, 1, 0), fg), (corner(1, 1, 0), fr), (c111, fb)]
                };
                mix(path, c000)
            }
            Interpolation::Trilinear => {
                let lerp = |a: [f32; 3], b: [f32; 3], t: f32| -> [f32; 3] {
                    std::array::from_fn(|c| a[c] + t * (b[c] - a[c]))
                };
                let x00 = lerp(c000, corner(1, 0, 0), fr);
                let x10 = lerp(corner(0, 1, 0), corner(1, 1, 0), fr);
                let x01 = lerp(corner(0, 0, 1), corner(1, 0, 1), fr);
                let x11 = lerp(corner(0, 1, 1), c111, fr);
                lerp(lerp(x00, x10, fg), lerp(x01, x11, fg), fb)
            }
        }
    }
}

/// A `.cube` LUT: a 1D table, a 3D table, or a 1D shaper then a 3D table.
#[derive(Debug, Clone)]
pub struct CubeLut {
    shaper: Option<Table1d>,
    lattice: Option<Table3d>,
}

/// What the header said, before the tables are read.
struct Header {
    size_1d: Option<(usize, usize)>,
    size_3d: Option<(usize, usize)>,
    range_1d: Option<[[f32; 3]; 2]>,
    range_3d: Option<[[f32; 3]; 2]>,
    domain: [Option<([f32; 3], usize)>; 2],
}

impl CubeLut {
    /// Parses the text of `name` (named, with the line, in every refusal).
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let refuse =
            |line: usize, reason: String| Error::invalid(format!("{name} line {line}"), reason);
        let mut header = Header {
            size_1d: None,
            size_3d: None,
            range_1d: None,
            range_3d: None,
            domain: [None, None],
        };
        let mut values: Vec<([f32; 3], usize)> = Vec::new();
        let mut last_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            last_line = line;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            let (first, rest) = (words[0], &words[1..]);
            let numbers = |parsed: &[&str], count: usize| -> Result<Vec<f32>> {
                if parsed.len() != count {
                    return Err(refuse(
                        line,
                        format!("`{content}`: expected {count} numbers"),
                    ));
                }
                parsed
                    .iter()
                    .map(|w| match w.parse::<f32>() {
                        Ok(v) if v.is_finite() => Ok(v),
                        _ => Err(refuse(line, format!("`{w}` is not a finite number"))),
                    })
                    .collect()
            };
            let size = |parsed: &[&str], max: usize| -> Result<usize> {
                match parsed[..] {
                    [n] => match n.parse::<usize>() {
                        Ok(n) if (2..=max).contains(&n) => Ok(n),
                        _ => Err(refuse(line, format!("size `{n}` is not in 2..={max}"))),
                    },
                    _ => Err(refuse(line, format!("`{content}`: expected one size"))),
                }
            };
            if first.starts_with(|c: char| c.is_ascii_alphabetic()) {
                if !values.is_empty() {
                    return Err(refuse(line, format!("`{first}` after the table's values")));
                }
                match first {
                    "TITLE" => {}
                    "LUT_1D_SIZE" => header.size_1d = Some((size(rest, MAX_1D)?, line)),
                    "LUT_3D_SIZE" => header.size_3d = Some((size(rest, MAX_3D)?, line)),
                    "LUT_1D_INPUT_RANGE" | "LUT_3D_INPUT_RANGE" => {
                        let v = numbers(rest, 2)?;
                        if v[0] >= v[1] {
                            return Err(refuse(
                                line,
                                format!("the range {} .. {} is not increasing", v[0], v[1]),
                            ));
                        }
                        let range = Some([[v[0]; 3], [v[1]; 3]]);
                        if first == "LUT_1D_INPUT_RANGE" {
                            header.range_1d = range;
                        } else {
                            header.range_3d = range;
                        }
                    }
                    "DOMAIN_MIN" | "DOMAIN_MAX" => {
                        let v = numbers(rest, 3)?;
                        header.domain[(first == "DOMAIN_MAX") as usize] =
                            Some(([v[0], v[1], v[2]], line));
                    }
                    other => return Err(refuse(line, format!("unknown keyword `{other}`"))),
                }
                continue;
            }
            let v = numbers(&words, 3)?;
            values.push(([v[0], v[1], v[2]], line));
        }
        let domain = match header.domain {
            [None, None] => None,
            [Some((min, line)), Some((max, _))] => {
                if let Some(c) = (0..3).find(|&c| min[c] >= max[c]) {
                    return Err(refuse(
                        line,
                        format!(
                            "DOMAIN_MIN {} is not below DOMAIN_MAX {} in channel {c}",
                            min[c], max[c]
                        ),
                    ));
                }
                Some([min, max])
            }
            [Some((_, line)), None] | [None, Some((_, line))] => {
                return Err(refuse(
                    line,
                    "DOMAIN_MIN and DOMAIN_MAX come together".into(),
                ));
            }
        };
        let n1 = header.size_1d.map_or(0, |(n, _)| n);
        let n3 = header.size_3d.map_or(0, |(n, _)| n);
        if n1 == 0 && n3 == 0 {
            return Err(refuse(
                last_line.max(1),
                "no LUT_1D_SIZE or LUT_3D_SIZE".into(),
            ));
        }
        let expected = n1 + n3 * n3 * n3;
        if values.len() < expected {
            return Err(refuse(
                last_line,
                format!(
                    "the table ends after {} of its {expected} entries (truncated?)",
                    values.len()
                ),
            ));
        }
        if values.len() > expected {
            return Err(refuse(
                values[expected].1,
                format!("more entries than the {expected} the sizes declare"),
            ));
        }
        let unit = [[0.0; 3], [1.0; 3]];
        let entries: Vec<[f32; 3]> = values.into_iter().map(|(v, _)| v).collect();
        let (shaper_entries, lattice_entries) = entries.split_at(n1);
        let shaper = (n1 > 0).then(|| {
            let [min, max] = header.range_1d.or(domain).unwrap_or(unit);
            Table1d {
                min,
                max,
                entries: shaper_entries.to_vec(),
            }
        });
        let lattice = (n3 > 0).then(|| {
            let default = if n1 > 0 { unit } else { domain.unwrap_or(unit) };
            let [min, max] = header.range_3d.unwrap_or(default);
            Table3d {
                min,
                max,
                size: n3,
                entries: lattice_entries.to_vec(),
            }
        });
        Ok(Self { shaper, lattice })
    }

    /// The LUT applied to one colour.
    pub fn apply(&self, rgb: [f32; 3], interpolation: Interpolation) -> [f32; 3] {
        let shaped = match &self.shaper {
            Some(table) => table.apply(rgb),
            None => rgb,
        };
        match &self.lattice {
            Some(table) => table.apply(shaped, interpolation),
            None => shaped,
        }
    }

    /// The largest input every channel accepts without clamping.
    pub fn input_max(&self) -> f32 {
        let max = match (&self.shaper, &self.lattice) {
            (Some(table), _) => table.max,
            (None, Some(table)) => table.max,
            (None, None) => [1.0; 3],
        };
        max.into_iter().fold(f32::INFINITY, f32::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3D LUT of `size` per side holding `f` of each grid point in [0, 1].
    fn lattice(size: usize, f: impl Fn([f32; 3]) -> [f32; 3]) -> String {
        let mut text = format!("TITLE \"test\"\nLUT_3D_SIZE {size}\n");
        let step = 1.0 / (size - 1) as f32;
        for b in 0..size {
            for g in 0..size {
                for r in 0..size {
                    let v = f([r as f32 * step, g as f32 * step, b as f32 * step]);
                    text += &format!("{} {} {}\n", v[0], v[1], v[2]);
                }
            }
        }
        text
    }

    #[test]
    fn a_linear_lattice_is_exact_between_its_points_either_way() {
        // Red fastest: a permutation with a scale shows the order is right.
        let lut = CubeLut::parse("swap.cube", &lattice(5, |[r, g, b]| [g, b * 0.5, r])).unwrap();
        for interpolation in [Interpolation::Tetrahedral, Interpolation::Trilinear] {
            let out = lut.apply([0.3, 0.71, 0.9], interpolation);
            for (a, b) in out.iter().zip([0.71, 0.45, 0.3]) {
                assert!((a - b).abs() < 1e-6, "{interpolation:?}: {out:?}");
            }
        }
    }

    #[test]
    fn a_shaper_feeds_the_lattice_over_its_input_range() {
        let mut text = String::from("LUT_1D_SIZE 3\nLUT_1D_INPUT_RANGE 0 4\nLUT_3D_SIZE 2\n");
        text += "0 0 0\n0.5 0.5 0.5\n1 1 1\n";
        text += &lattice(2, |v| v)
            .lines()
            .skip(2)
            .collect::<Vec<_>>()
            .join("\n");
        let lut = CubeLut::parse("shaped.cube", &text).unwrap();
        let out = lut.apply([1.0, 2.0, 8.0], Interpolation::Tetrahedral);
        assert_eq!(out, [0.25, 0.5, 1.0]);
        assert_eq!(lut.input_max(), 4.0);
    }

    #[test]
    fn malformed_luts_are_refused_naming_the_file_and_the_line() {
        let good = lattice(2, |v| v);
        let cases = [
            (
                good.lines().take(8).collect::<Vec<_>>().join("\n"),
                "line 8",
                "truncated",
            ),
            (good.clone() + "0 0 0\n", "line 11", "more entries"),
            (
                good.replace("LUT_3D_SIZE 2", "LUT_3D_SIZE 1"),
                "line 2",
                "not in 2..=256",
            ),
            (
                good.replace("1 1 1", "1 NaN 1"),
                "line 10",
                "not a finite number",
            ),
            (
                format!("DOMAIN_MIN 0 0 1\nDOMAIN_MAX 1 1 1\n{good}"),
                "line 1",
                "not below DOMAIN_MAX",
            ),
            (
                "LUT_1D_SIZE 2\nLUT_1D_INPUT_RANGE 4 0\n0 0 0\n1 1 1\n".to_string(),
                "line 2",
                "not increasing",
            ),
            (good.replace("TITLE", "TITEL"), "line 1", "unknown keyword"),
            ("# nothing\n".to_string(), "line 1", "no LUT_1D_SIZE"),
        ];
        for (text, line, says) in cases {
            let error = CubeLut::parse("bad.cube", &text).unwrap_err().to_string();
            assert!(
                error.contains(&format!("bad.cube {line}")),
                "{says}: {error}"
            );
            assert!(error.contains(says), "{error}");
        }
    }
}
