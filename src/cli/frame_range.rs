//! `--frame-range`: which frames of a shot a command renders, in Open Job Description's range
//! expression syntax (`1001-1100`, `1001-1100:2`, `1-3,5,7-20:2`) or the `1-100x2` step
//! form of Deadline and Nuke.

use anyhow::Result;

use super::exit::Usage;

/// The frames a range expression names, ascending; errors name `--frame-range`.
pub fn parse(expression: &str) -> Result<Vec<u64>> {
    let refuse = |why: String| -> Result<Vec<u64>> {
        Err(Usage(format!("--frame-range: `{expression}`: {why}")).into())
    };
    let mut frames = Vec::new();
    for item in expression.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return refuse("an empty item (expected N, A-B, A-B:STEP or A-BxSTEP)".into());
        }
        let (span, step) = match item.split_once([':', 'x']) {
            Some((span, step)) => (span.trim(), Some(step.trim())),
            None => (item, None),
        };
        let number = |text: &str| -> Result<u64> {
            text.parse::<u64>().map_err(|_| {
                Usage(format!(
                    "--frame-range: `{expression}`: `{text}` is not a frame number (0 or more)"
                ))
                .into()
            })
        };
        let (first, last) = match span.split_once('-') {
            Some((a, b)) => (number(a.trim())?, number(b.trim())?),
            None if step.is_some() => return refuse(format!("`{item}` has a step but no range")),
            None => (number(span)?, number(span)?),
        };
        let step = match step {
            Some(text) => match text.parse::<u64>() {
                Ok(0) | Err(_) => {
                    return refuse(format!("`{text}` in `{item}` is not a step of 1 or more"));
                }
                Ok(n) => n,
            },
            None => 1,
        };
        if first > last {
            return refuse(format!("`{item}` runs backwards"));
        }
        if (last - first) / step >= 1_000_000 {
            return refuse(format!("`{item}` names more than a million frames"));
        }
        frames.extend((first..=last).step_by(step as usize));
    }
    frames.sort_unstable();
    if let Some(pair) = frames.windows(2).find(|w| w[0] == w[1]) {
        return refuse(format!("frame {} is named twice", pair[0]));
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn open_job_description_and_step_forms() {
        assert_eq!(parse("1001-1004").unwrap(), vec![1001, 1002, 1003, 1004]);
        assert_eq!(parse("1001-1006:2").unwrap(), vec![1001, 1003, 1005]);
        assert_eq!(parse("1-3,5,7-12:2").unwrap(), vec![1, 2, 3, 5, 7, 9, 11]);
        assert_eq!(parse("1-9x4").unwrap(), vec![1, 5, 9]);
        assert_eq!(parse(" 7 ").unwrap(), vec![7]);
        assert_eq!(parse("10, 1-2").unwrap(), vec![1, 2, 10]);
    }

    #[test]
    fn bad_ranges_are_refused_naming_the_flag_and_the_item() {
        for (bad, says) in [
            ("", "empty item"),
            ("1-", "is not a frame number"),
            ("a-b", "`a` is not a frame number"),
            ("-5", "is not a frame number"),
            ("10-1", "runs backwards"),
            ("1-10:0", "not a step"),
            ("1-10x-2", "not a step"),
            ("5:2", "has a step but no range"),
            ("1-3,2", "frame 2 is named twice"),
            ("0-99999999999", "more than a million"),
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.starts_with("--frame-range: "), "{bad}: {error}");
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
