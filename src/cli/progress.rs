//! How the CLI's jobs report progress: a terminal's bar, or, when stdout is not a terminal
//! (a farm's task log), one line at most a second, in Open Job Description's stdout
//! protocol (`openjd_progress:` / `openjd_status:`) or a stable plain form for Deadline 10,
//! OpenCue and Tractor regex handlers (docs/render-farm.md has the regex).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, ValueEnum};

/// A form of progress report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// `openjd_progress: <percent>` and `openjd_status: <where>` lines.
    Openjd,
    /// `progress: <percent>% <where>` lines.
    Plain,
    /// A terminal's progress bar.
    Bar,
    /// Nothing but the results.
    None,
}

#[derive(Args, Clone)]
pub struct ProgressArgs {
    /// How progress is reported. Default: a bar on a terminal, else plain lines (one a
    /// second at most).
    #[arg(long, value_enum)]
    progress: Option<ProgressMode>,
    /// No progress reports (--progress none).
    #[arg(long)]
    quiet: bool,
}

impl ProgressArgs {
    /// The mode asked for, else the default for where stdout goes.
    pub fn mode(&self) -> ProgressMode {
        match (self.quiet, self.progress) {
            (true, _) => ProgressMode::None,
            (false, Some(mode)) => mode,
            (false, None) if std::io::stdout().is_terminal() => ProgressMode::Bar,
            (false, None) => ProgressMode::Plain,
        }
    }
}

/// Where a job stands at one report.
pub struct Step<'a> {
    /// The frame's number, its 1-based place among the run's frames, and their count (none
    /// for a still).
    pub frame: Option<(u64, usize, usize)>,
    /// 1-based scale and the frame's scales.
    pub scale: (usize, usize),
    /// 1-based iteration, counted across the frame's scales, and their total.
    pub iteration: (usize, usize),
    /// The losses, as the bar shows them.
    pub losses: &'a str,
}

impl Step<'_> {
    /// `frame 1012 (12/100), scale 2/3, iteration 14/30`.
    fn place(&self) -> String {
        let frame = self
            .frame
            .map(|(number, at, of)| format!("frame {number} ({at}/{of}), "))
            .unwrap_or_default();
        format!(
            "{frame}scale {}/{}, iteration {}/{}",
            self.scale.0, self.scale.1, self.iteration.0, self.iteration.1
        )
    }
}

/// Reports a job's progress over `total` iterations in one mode.
pub struct Reporter {
    mode: ProgressMode,
    bar: indicatif::ProgressBar,
    total: u64,
    /// When the last line was printed (lines modes print one a second at most).
    last: Mutex<Option<Instant>>,
}

impl Reporter {
    pub fn new(args: &ProgressArgs, total: u64) -> Result<Self> {
        let mode = args.mode();
        let bar = if mode == ProgressMode::Bar {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}",
            )?
            .progress_chars("=> "),
        );
        Ok(Self {
            mode,
            bar,
            total: total.max(1),
            last: Mutex::new(None),
        })
    }

    /// The job has run `done` of its iterations and stands at `step`.
    pub fn step(&self, done: u64, step: &Step<'_>) {
        match self.mode {
            ProgressMode::None => {}
            ProgressMode::Bar => {
                self.bar.set_position(done);
                let frame = step
                    .frame
                    .map(|(_, at, of)| format!("frame {at}/{of} "))
                    .unwrap_or_default();
                self.bar.set_message(format!("{frame}{}", step.losses));
            }
            ProgressMode::Openjd | ProgressMode::Plain => {
                if !self.due() {
                    return;
                }
                let percent = 100.0 * done.min(self.total) as f64 / self.total as f64;
                if self.mode == ProgressMode::Openjd {
                    println!("openjd_progress: {percent:.1}");
                    println!("openjd_status: {}", step.place());
                } else {
                    println!("progress: {percent:.1}% {} {}", step.place(), step.losses);
                }
            }
        }
    }

    /// Whether a line may be printed now (one a second at most); marks it printed.
    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Where the job stands between steps (queued, started): the bar's message, or a line
    /// in the line modes.
    pub fn note(&self, text: &str) {
        match self.mode {
            ProgressMode::Bar => self.bar.set_message(text.to_string()),
            ProgressMode::Openjd => println!("openjd_status: {text}"),
            ProgressMode::Plain => println!("status: {text}"),
            ProgressMode::None => {}
        }
    }

    /// A message for the task's log, printed whatever the mode (results, resumes).
    pub fn say(&self, line: &str) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// The job is done: the bar stays as it ended; the line modes report 100%.
    pub fn finish(&self) {
        match self.mode {
            ProgressMode::Bar => self.bar.finish(),
            ProgressMode::Openjd => println!("openjd_progress: 100.0"),
            ProgressMode::Plain => println!("progress: 100.0% done"),
            ProgressMode::None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_place_reads_as_openjd_status_wants_it() {
        let step = Step {
            frame: Some((1012, 12, 100)),
            scale: (2, 3),
            iteration: (14, 30),
            losses: "",
        };
        assert_eq!(
            step.place(),
            "frame 1012 (12/100), scale 2/3, iteration 14/30"
        );
        let still = Step {
            frame: None,
            ..step
        };
        assert_eq!(still.place(), "scale 2/3, iteration 14/30");
    }

    #[test]
    fn lines_come_one_a_second_at_most() {
        let args = ProgressArgs {
            progress: Some(ProgressMode::Plain),
            quiet: false,
        };
        let reporter = Reporter::new(&args, 10).unwrap();
        assert!(reporter.due(), "the first line is printed");
        assert!(
            (0..1000).all(|_| !reporter.due()),
            "no second line within the second"
        );
        std::thread::sleep(Duration::from_millis(1050));
        assert!(reporter.due(), "a line a second later");
        assert!(!reporter.due());
    }
}
