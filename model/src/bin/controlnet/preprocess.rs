//! `controlnet preprocess`: a picture in, a control map (PNG) out, with the `preprocess` crate
//! (the same code as the browser's preprocessing worker).

use std::path::PathBuf;
use std::time::Instant;

use preprocess::{GrayImage, ResizeMode};

pub const USAGE: &str = "  controlnet preprocess canny|scribble|xdog IN OUT.png [--low L --high H]
      [--resize-mode just|crop|fill --width W --height H] [--invert]";

/// The largest `--width`/`--height`: the decoder's own limit.
const MAX_SIDE: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Canny { low: f64, high: f64 },
    Scribble,
    Xdog,
}

#[derive(Debug)]
struct Args {
    op: Op,
    input: PathBuf,
    output: PathBuf,
    /// Mode and size to fit the picture to before the preprocessor runs.
    size: Option<(ResizeMode, usize, usize)>,
    invert: bool,
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("`{flag} {value}`: {e}"))
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut positional = Vec::new();
    let (mut low, mut high, mut mode, mut width, mut height, mut invert) =
        (None, None, None, None, None, false);
    let mut args = args;
    while let Some(arg) = args.next() {
        if arg == "--invert" {
            invert = true;
            continue;
        }
        if !arg.starts_with("--") {
            positional.push(arg);
            continue;
        }
        let value = args.next().ok_or_else(|| format!("`{arg}` needs a value"))?;
        match arg.as_str() {
            "--low" => low = Some(parse::<f64>(&arg, &value)?),
            "--high" => high = Some(parse::<f64>(&arg, &value)?),
            "--resize-mode" => mode = Some(parse::<ResizeMode>(&arg, &value)?),
            "--width" => width = Some(parse::<usize>(&arg, &value)?),
            "--height" => height = Some(parse::<usize>(&arg, &value)?),
            _ => return Err(format!("unknown option `{arg}` for preprocess (see `controlnet --help`)")),
        }
    }
    let [op, input, output] = <[String; 3]>::try_from(positional).map_err(|given| {
        format!("preprocess takes canny|scribble|xdog IN OUT.png, got {} argument(s)", given.len())
    })?;
    let op = match op.as_str() {
        "canny" => {
            let (low, high) = (low.unwrap_or(100.0), high.unwrap_or(200.0));
            for (flag, value) in [("--low", low), ("--high", high)] {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!("`{flag} {value}`: a Canny threshold is a number from 0 up"));
                }
            }
            Op::Canny { low, high }
        }
        "scribble" | "xdog" if low.is_some() || high.is_some() => {
            return Err(format!("`--low` and `--high` are Canny thresholds; `{op}` has none"));
        }
        "scribble" => Op::Scribble,
        "xdog" => Op::Xdog,
        other => return Err(format!("unknown preprocessor `{other}` (expected canny, scribble or xdog)")),
    };
    let size = match (width, height) {
        (Some(w), Some(h)) => {
            if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
                return Err(format!("{w}×{h}: width and height must be from 1 to {MAX_SIDE}"));
            }
            Some((mode.unwrap_or_default(), w, h))
        }
        (None, None) if mode.is_some() => return Err("`--resize-mode` needs `--width` and `--height`".into()),
        (None, None) => None,
        _ => return Err("give both `--width` and `--height`, or neither".into()),
    };
    Ok(Args { op, input: input.into(), output: output.into(), size, invert })
}

pub fn run(args: impl Iterator<Item = String>) -> Result<(), String> {
    let args = parse_args(args)?;
    let bytes = std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let picture = preprocess::decode(&bytes).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let picture = match args.size {
        Some((mode, width, height)) => preprocess::resize(&picture, mode, width, height),
        None => picture,
    };
    let started = Instant::now();
    let map: GrayImage = match args.op {
        Op::Canny { low, high } => preprocess::canny(&picture, low, high),
        Op::Scribble => preprocess::scribble_from_lineart(&picture),
        Op::Xdog => preprocess::xdog(&picture),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    let map = if args.invert { map.inverted() } else { map };
    std::fs::write(&args.output, preprocess::encode_png_gray(&map))
        .map_err(|e| format!("{}: {e}", args.output.display()))?;
    eprintln!(
        "wrote {} ({}×{}, {:?}{}) in {elapsed_ms:.1} ms",
        args.output.display(),
        map.width,
        map.height,
        args.op,
        if args.invert { ", inverted" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_every_option() {
        let parsed = args(
            "canny a.png b.png --low 50 --high 120.5 --resize-mode fill --width 512 --height 768 --invert",
        )
        .unwrap();
        assert_eq!(parsed.op, Op::Canny { low: 50.0, high: 120.5 });
        assert_eq!(parsed.size, Some((ResizeMode::ResizeAndFill, 512, 768)));
        assert!(parsed.invert);
        let parsed = args("xdog a.png b.png").unwrap();
        assert_eq!((parsed.op, parsed.size, parsed.invert), (Op::Xdog, None, false));
        assert_eq!(
            args("canny a b --width 8 --height 9").unwrap().size,
            Some((ResizeMode::JustResize, 8, 9))
        );
    }

    #[test]
    fn refuses_bad_combinations() {
        for (line, needle) in [
            ("canny a.png", "got 2 argument(s)"),
            ("blur a.png b.png", "unknown preprocessor `blur`"),
            ("scribble a b --low 3", "`scribble` has none"),
            ("canny a b --low -1", "from 0 up"),
            ("canny a b --high nan", "from 0 up"),
            ("canny a b --width 64", "both `--width` and `--height`"),
            ("canny a b --resize-mode crop", "needs `--width`"),
            ("canny a b --width 0 --height 5", "from 1 to 8192"),
            ("canny a b --resize-mode stretch --width 5 --height 5", "just, crop or fill"),
            ("canny a b --low", "needs a value"),
            ("canny a b --blur 3", "unknown option `--blur`"),
        ] {
            let error = args(line).unwrap_err();
            assert!(error.contains(needle), "{line}: {error}");
            assert!(!error.contains('\n'), "{line}: one line");
        }
    }
}
