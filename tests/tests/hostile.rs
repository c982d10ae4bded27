//! Hostile inputs for every subcommand, through `rpn_cli::main_with` (exactly what the binary's
//! `main` runs): each case asserts the exit status (0 success, 2 usage, 1 other), words of the
//! message, that nothing panicked, and that outputs which existed before are byte-for-byte
//! untouched. The inputs are made here, small: crafted `.npy` headers, a real Keras file with a
//! patched dataspace, truncated checkpoints, closed pipes.
//!
//! Fixture: `tests/fixtures/keras/seed001.h5` (written by real Keras, `gen_keras.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use rpn_tests::{fixtures_dir, scratch_dir};

/// What a run of `rpn ARGS` gave: exit status, stdout, stderr.
struct Outcome {
    code: u8,
    stdout: String,
    stderr: String,
}

fn rpn(args: &[&str]) -> Outcome {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code =
        rpn_cli::main_with(std::iter::once("rpn").chain(args.iter().copied()), &mut out, &mut err);
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// Asserts `rpn ARGS` exits with `code` and its stderr contains every one of `words`.
#[track_caller]
fn refused(args: &[&str], code: u8, words: &[&str]) -> String {
    let o = rpn(args);
    assert_eq!(o.code, code, "rpn {}\nstdout: {}\nstderr: {}", args.join(" "), o.stdout, o.stderr);
    for w in words {
        assert!(o.stderr.contains(w), "rpn {}: `{w}` not in:\n{}", args.join(" "), o.stderr);
    }
    assert!(o.stdout.is_empty(), "an error prints no report: {}", o.stdout);
    o.stderr
}

/// An `.npy` file as numpy writes it, with any header text (hostile ones included).
fn npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// Files that exist before a failing command, to check they are untouched after it.
struct Sentinels(Vec<(PathBuf, Vec<u8>)>);

impl Sentinels {
    fn new(paths: &[&Path]) -> Self {
        Self(
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let bytes = format!("old contents {i}").into_bytes();
                    std::fs::write(p, &bytes).unwrap();
                    (p.to_path_buf(), bytes)
                })
                .collect(),
        )
    }

    #[track_caller]
    fn untouched(&self) {
        for (path, bytes) in &self.0 {
            let now = std::fs::read(path).unwrap();
            assert!(now == *bytes, "{} changed ({} bytes now)", path.display(), now.len());
        }
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// seed001 weights ported from the real Keras fixture.
fn seed001_weights(dir: &Path) -> PathBuf {
    let weights = dir.join("seed001.safetensors");
    let h5 = fixtures_dir().join("keras/seed001.h5");
    let o = rpn(&["port-keras", s(&h5), "--arch", "seed001", "-o", s(&weights)]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    weights
}

/// A writer that fails every write with `kind`.
struct Failing(std::io::ErrorKind);

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn closed_and_full_stdout_are_not_panics() {
    let dir = scratch_dir("hostile-stdout");
    let weights = seed001_weights(&dir);
    // `rpn inspect W | :` — the reader is gone: quiet success, like other Unix tools.
    let mut err = Vec::new();
    let code = rpn_cli::main_with(
        ["rpn", "inspect", s(&weights)],
        &mut Failing(std::io::ErrorKind::BrokenPipe),
        &mut err,
    );
    assert_eq!((code, err.as_slice()), (0, &b""[..]));
    // `rpn --help > /dev/full`: reported, status 1.
    let mut err = Vec::new();
    let code = rpn_cli::main_with(
        ["rpn", "--help"],
        &mut Failing(std::io::ErrorKind::StorageFull),
        &mut err,
    );
    assert_eq!(code, 1);
    assert!(String::from_utf8_lossy(&err).contains("cannot write the report to standard output"));
    // Both streams gone: still no panic.
    let code = rpn_cli::main_with(
        ["rpn", "inspect", "/no/such/file.safetensors"],
        &mut Failing(std::io::ErrorKind::BrokenPipe),
        &mut Failing(std::io::ErrorKind::BrokenPipe),
    );
    assert_eq!(code, 1);
    // Help and version are answers on stdout, status 0.
    let o = rpn(&["--version"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.starts_with("rpn "), "{}", o.stdout);
}

#[test]
fn usage_errors_exit_2_and_name_the_flag_and_value() {
    let dir = scratch_dir("hostile-usage");
    let run = dir.join("run");
    // `RUN` stands for the run directory; the words must all be in the message.
    let cases: &[(&str, &[&str])] = &[
        ("train --steps 0 -o RUN", &["--steps", "'0'", "at least 1"]),
        ("train --steps 2 --image-size 0 -o RUN", &["--image-size", "'0'"]),
        ("train --steps 2 --image-size 100000 -o RUN", &["100000"]),
        ("train --steps 2 --image-size 4294967296 -o RUN", &["4294967296"]),
        ("train --steps 2 --image-size 63 -o RUN", &["--image-size 63", "stride 2"]),
        ("train --steps 2 --lr NaN -o RUN", &["--lr", "not a finite number"]),
        ("train --steps 2 --lr -1 -o RUN", &["--lr", "must be > 0"]),
        ("train --steps 2 --momentum 1 -o RUN", &["--momentum", "[0, 1)"]),
        ("train --steps 2 --schedule cosine:NaN -o RUN", &["cosine:NaN", "finite"]),
        ("train --steps 2 --schedule cosine:-0.5 -o RUN", &["floor", "[0, 1]"]),
        ("train --steps 2 --schedule step:0:0.5 -o RUN", &["step:0:0.5", "at least 1"]),
        ("train --steps 2 --batch-size -3 -o RUN", &["--batch-size", "negative"]),
        ("train --steps 2 --override -o RUN", &["--resume"]),
        ("eval --weights w.safetensors --images 0", &["--images", "at least 1"]),
        ("eval --weights w.safetensors --nms-iou 1.5", &["--nms-iou", "(0, 1]"]),
        ("demo --steps 0", &["--steps"]),
        ("propose --arch seed001 --weights w --image a.png -o o.json --top 0", &["--top"]),
        (
            "propose --arch seed001 --weights w --image a.png -o o.json --preset matterport-inference",
            &["--preset", "Matterport"],
        ),
        ("propose --arch seed001 --weights w --input x.npy -o o.json", &["--input", "Matterport"]),
        (
            "propose --arch seed001 --weights w --backbone-weights v --image a.png -o o.json",
            &["--backbone-weights", "seed002"],
        ),
        (
            "propose --arch matterport-resnet50 --weights w --input x.npy --draw d.png -o o.json",
            &["--draw"],
        ),
        (
            "propose --arch seed002 --weights w --image a.png -o o.json",
            &["--backbone-weights", "vgg16"],
        ),
        (
            "train --arch torchvision-resnet50-fpn --steps 2 -o RUN",
            &["--arch torchvision-resnet50-fpn", "seed001", "matterport-resnet50"],
        ),
        ("train --arch matterport-resnet50 --layers 4 --steps 2 -o RUN", &["--layers", "`4`"]),
        ("train --arch matterport-resnet50 --width 0 --steps 2 -o RUN", &["--width", "'0'"]),
        ("train --arch matterport-resnet50 --width 100000 --steps 2 -o RUN", &["--width", "wider"]),
        ("frobnicate", &["frobnicate"]),
    ];
    for (command, words) in cases {
        let args: Vec<&str> =
            command.split_whitespace().map(|a| if a == "RUN" { s(&run) } else { a }).collect();
        refused(&args, 2, words);
    }
    assert!(!run.exists(), "no usage error may create the run directory");
}

#[test]
fn crafted_arrays_are_named_errors_not_aborts() {
    let dir = scratch_dir("hostile-npy");
    let weights = seed001_weights(&dir);
    let out = dir.join("old.npz");
    let sentinels = Sentinels::new(&[&out]);
    let forward = |input: &Path| {
        vec![
            "forward".to_owned(),
            "--arch".into(),
            "seed001".into(),
            "--weights".into(),
            s(&weights).into(),
            "--input".into(),
            s(input).into(),
            "-o".into(),
            s(&out).into(),
        ]
    };
    // (file stem, dtype, shape, data, words of the message)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<u8>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        // A header claiming 120 GB in a 100-byte file: refused before allocating.
        (
            "huge",
            "<f4",
            "(1, 100000, 100000, 3)",
            vec![0; 16],
            vec!["declares shape", "120000000000 bytes"],
        ),
        (
            "overflow",
            "<f4",
            "(4294967296, 4294967296, 4294967296, 3)",
            vec![],
            vec!["declares shape"],
        ),
        ("negative", "<f4", "(1, -64, 64, 3)", vec![], vec!["`-64`", "non-negative"]),
        ("zero-height", "<f4", "(1, 0, 64, 3)", vec![], vec!["zero dimension"]),
        ("zero-batch", "<f4", "(0, 64, 64, 3)", vec![], vec!["zero dimension"]),
        (
            "rank3",
            "<f4",
            "(64, 64, 3)",
            f32_bytes(vec![0.0; 64 * 64 * 3]),
            vec!["NHWC", "[64, 64, 3]"],
        ),
        (
            "channels",
            "<f4",
            "(1, 8, 8, 5)",
            f32_bytes(vec![0.0; 8 * 8 * 5]),
            vec!["5 channels", "takes 3"],
        ),
        (
            "nan",
            "<f4",
            "(1, 8, 8, 3)",
            f32_bytes(vec![f32::NAN; 8 * 8 * 3]),
            vec!["192 of 192 values are NaN"],
        ),
        ("truncated", "<f4", "(1, 8, 8, 3)", vec![0; 100], vec!["768 bytes", "100 bytes"]),
        ("complex", "<c8", "(1, 8, 8, 3)", vec![0; 8 * 192], vec!["dtype '<c8'"]),
    ];
    for (name, descr, shape, data, words) in cases {
        let input = dir.join(format!("{name}.npy"));
        npy(&input, descr, shape, &data);
        let args = forward(&input);
        let mut words = words;
        words.push(name);
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1, &words);
        sentinels.untouched();
    }
    // A real array whose forward pass would not fit the budget: refused before the network.
    let input = dir.join("wide.npy");
    npy(&input, "|u1", "(1, 512, 512, 3)", &vec![0; 512 * 512 * 3]);
    let mut args = forward(&input);
    args.extend(["--memory-budget".to_owned(), "64M".to_owned()]);
    refused(&strs(&args), 1, &["memory budget", "wide.npy", "[1, 512, 512, 3]"]);
    sentinels.untouched();
    // Not an npy at all.
    let input = dir.join("garbage.npy");
    std::fs::write(&input, b"PK\x03\x04 this is a zip").unwrap();
    let args = forward(&input);
    refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1, &["garbage.npy", "magic"]);
    // And a good one (u8 pixels are read as f32) still works and replaces the old file.
    let input = dir.join("good.npy");
    npy(&input, "|u1", "(1, 8, 8, 3)", &[7; 192]);
    let args = forward(&input);
    let o = rpn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(std::fs::read(&out).unwrap().starts_with(b"PK"), "an npz (zip) replaced the file");
}

#[test]
fn crafted_h5_and_safetensors_are_named_errors() {
    let dir = scratch_dir("hostile-h5");
    let out = dir.join("old.safetensors");
    let sentinels = Sentinels::new(&[&out]);
    // Real Keras file, the stem kernel's dataspace patched from (3, 3, 3, 64) to
    // (3, 3, 100000, 100000): 360 GB declared in a 3 MB file.
    let mut bytes = std::fs::read(fixtures_dir().join("keras/seed001.h5")).unwrap();
    let from: Vec<u8> = [3u64, 3, 3, 64].iter().flat_map(|d| d.to_le_bytes()).collect();
    let to: Vec<u8> = [3u64, 3, 100_000, 100_000].iter().flat_map(|d| d.to_le_bytes()).collect();
    let mut patched = 0;
    while let Some(at) = bytes.windows(from.len()).position(|w| w == from.as_slice()) {
        bytes.splice(at..at + from.len(), to.iter().copied());
        patched += 1;
    }
    assert!(patched > 0, "the fixture stores the stem kernel's dims as u64");
    let h5 = dir.join("huge.h5");
    std::fs::write(&h5, &bytes).unwrap();
    refused(
        &["port-keras", s(&h5), "--arch", "seed001", "-o", s(&out)],
        1,
        &["huge.h5", "100000", "more than"],
    );
    refused(&["inspect", s(&h5)], 1, &["huge.h5", "more than"]);
    sentinels.untouched();

    // Non-ASCII --exclude patterns match by character (used to slice inside `é` and panic).
    let real = fixtures_dir().join("keras/seed001.h5");
    let o = rpn(&[
        "port-keras",
        s(&real),
        "--arch",
        "seed001",
        "-o",
        s(&out),
        "--exclude",
        "é*",
        "--exclude",
        "*ц",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);

    // Truncated and lying safetensors.
    let good = std::fs::read(&out).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    refused(&["inspect", s(&truncated)], 1, &["truncated.safetensors"]);
    let lying = dir.join("lying.safetensors");
    let mut header = u64::MAX.to_le_bytes().to_vec();
    header.extend(b"{}");
    std::fs::write(&lying, &header).unwrap();
    refused(&["inspect", s(&lying)], 1, &["lying.safetensors"]);
    refused(&["inspect", "/no/such/file.safetensors"], 1, &["/no/such/file.safetensors"]);

    // PyTorch checkpoints: truncated (no zip directory) and not a zip at all.
    let pth = std::fs::read(fixtures_dir().join("torch/torchvision_narrow.pth")).unwrap();
    let cut = dir.join("cut.pth");
    std::fs::write(&cut, &pth[..pth.len() / 2]).unwrap();
    let arch = "torchvision-resnet50-fpn";
    let out = dir.join("torch.safetensors");
    let sentinels = Sentinels::new(&[&out]);
    refused(&["inspect", s(&cut)], 1, &["cut.pth", "not a readable PyTorch state dict"]);
    refused(&["port-torch", s(&cut), "--arch", arch, "-o", s(&out)], 1, &["cut.pth"]);
    let text = dir.join("text.pth");
    std::fs::write(&text, b"{\"not\": \"a checkpoint\"}").unwrap();
    refused(&["port-torch", s(&text), "--arch", arch, "-o", s(&out)], 1, &["text.pth"]);
    sentinels.untouched();
}

#[test]
fn outputs_are_atomic_and_devices_are_never_replaced() {
    let dir = scratch_dir("hostile-out");
    let weights = seed001_weights(&dir);
    let h5 = fixtures_dir().join("keras/seed001.h5");
    #[cfg(unix)]
    {
        refused(
            &["port-keras", s(&h5), "--arch", "seed001", "-o", "/dev/null"],
            1,
            &["/dev/null", "not a regular file"],
        );
        let meta = std::fs::metadata("/dev/null").unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_char_device(), "/dev/null is still a device");
    }
    refused(&["port-keras", s(&h5), "--arch", "seed001", "-o", s(&dir)], 1, &["a directory"]);
    refused(
        &["port-keras", s(&h5), "--arch", "seed001", "-o", s(&dir.join("no/dir/w.safetensors"))],
        1,
        &["no/dir/w.safetensors"],
    );

    // `propose` with several images and pictures: one bad image, nothing written.
    let good = dir.join("good.png");
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 3, y as u8 * 5, 80]))
        .save(&good)
        .unwrap();
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n but then nothing").unwrap();
    let json = dir.join("old.json");
    let drawn = dir.join("old.png");
    let (drawn0, drawn1) = (dir.join("old_0.png"), dir.join("old_1.png"));
    let sentinels = Sentinels::new(&[&json, &drawn0, &drawn1]);
    let propose = |images: &[&Path], extra: &[&str]| {
        let mut args = vec![
            "propose",
            "--arch",
            "seed001",
            "--weights",
            s(&weights),
            "-o",
            s(&json),
            "--draw",
            s(&drawn),
        ];
        args.push("--image");
        args.extend(images.iter().map(|p| s(p)));
        args.extend(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = propose(&[&good, &bad], &[]);
    refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1, &["bad.png", "decode"]);
    sentinels.untouched();
    // Over the memory budget (both images run at 2048²): refused, nothing written.
    let big = dir.join("big.png");
    image::RgbImage::new(64, 48).save(&big).unwrap();
    let args = propose(&[&good, &big], &["--image-size", "2048", "--memory-budget", "1G"]);
    refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1, &["memory budget"]);
    sentinels.untouched();
    // A picture into a directory that does not exist: refused before any work.
    let args = vec![
        "propose",
        "--arch",
        "seed001",
        "--weights",
        s(&weights),
        "--image",
        s(&good),
        "-o",
        s(&json),
        "--draw",
        "/no/such/dir/p.png",
    ];
    refused(&args, 1, &["/no/such/dir/p.png"]);
    sentinels.untouched();
    leaves_no_temporary_files(&dir);

    // And the successful run replaces them all, with ordinary permissions.
    let args = propose(&[&good, &big], &[]);
    let o = rpn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(std::fs::read_to_string(&json).unwrap().contains("\"proposals\""));
    assert!(image::open(&drawn0).is_ok() && image::open(&drawn1).is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let fresh = dir.join("fresh.json");
        let args = vec![
            "propose",
            "--arch",
            "seed001",
            "--weights",
            s(&weights),
            "--image",
            s(&good),
            "-o",
            s(&fresh),
        ];
        assert_eq!(rpn(&args).code, 0);
        assert_eq!(mode(&fresh), mode(&plain), "outputs get the umask's mode, not 0600");
    }
    leaves_no_temporary_files(&dir);
}

#[track_caller]
fn leaves_no_temporary_files(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rpn-tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn training_nonsense_is_refused_before_or_during_the_run() {
    let dir = scratch_dir("hostile-train");
    let run = dir.join("run");
    let r = s(&run);
    let small = ["--batch-size", "2", "--image-size", "32", "--precise-bn", "0"];
    let train = |extra: &[&str]| -> Vec<String> {
        ["train", "-o", r].iter().chain(small.iter()).chain(extra).map(|a| a.to_string()).collect()
    };

    // A learning rate of 1e30 diverges: status 1, named, and no final weights.
    refused(
        &strs(&train(&["--steps", "4", "--lr", "1e30", "--checkpoint-every", "0"])),
        1,
        &["diverged", "not finite"],
    );
    assert!(!run.join("final.safetensors").exists());

    // Memory budget: a batch of 100000 is refused before allocating.
    refused(
        &["train", "-o", r, "--steps", "2", "--batch-size", "100000"],
        1,
        &["memory budget", "100000"],
    );

    // A run directory that cannot exist (under a regular file) fails at once, not after training.
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("run");
    refused(
        &["train", "--steps", "1000000", "-o", s(&under_file)],
        1,
        &["a-file/run", "cannot create"],
    );

    // A real short run, then resumes that disagree with it.
    let o = rpn(&strs(&train(&["--steps", "2", "--seed", "3"])));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let checkpoint = run.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    let resume = |extra: &[&str]| -> Vec<String> {
        ["train", "-o", r, "--resume"].iter().chain(extra).map(|a| a.to_string()).collect()
    };
    refused(
        &strs(&resume(&["--steps", "3", "--image-size", "64"])),
        2,
        &["--image-size 64", "the checkpoint has 32", "--override"],
    );
    refused(
        &strs(&resume(&["--steps", "3", "--lr", "0.01", "--seed", "4"])),
        2,
        &["--lr 0.01", "--seed 4"],
    );
    refused(&strs(&resume(&["--steps", "2"])), 2, &["already at step 2"]);
    let coco = dir.join("coco");
    std::fs::create_dir_all(&coco).unwrap();
    image::RgbImage::new(32, 32).save(coco.join("a.png")).unwrap();
    std::fs::write(
        coco.join("annotations.json"),
        r#"{"images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
            "annotations": [{"id": 1, "image_id": 1, "bbox": [4, 4, 20, 16], "category_id": 1, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "box"}]}"#,
    )
    .unwrap();
    refused(
        &strs(&resume(&["--steps", "3", "--dataset", s(&coco)])),
        2,
        &["--dataset", "COCO", "shapes 32×32 (seed 3)"],
    );
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before, "refused resumes leave the checkpoint");

    // Resume without flags continues (the checkpoint's 32² and seed 3, not the defaults).
    let o = rpn(&strs(&resume(&["--steps", "3"])));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("shapes 32×32 (seed 3)"), "{}", o.stdout);
    // --override continues with the change and says so.
    let o = rpn(&strs(&resume(&["--steps", "4", "--lr", "0.001", "--override"])));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("--lr 0.001 (the checkpoint has 0.0005)"), "{}", o.stdout);

    // A checkpoint with a wrong-shape tensor: the file and the tensor are named.
    let mut tensors =
        candle_core::safetensors::load(&checkpoint, &candle_core::Device::Cpu).unwrap();
    let (name, t) = tensors
        .iter()
        .find(|(k, _)| k.ends_with("bias") && !k.starts_with("optimizer"))
        .map(|(k, t)| (k.clone(), t.clone()))
        .unwrap();
    let wrong = candle_core::Tensor::zeros(t.dims()[0] + 1, t.dtype(), t.device()).unwrap();
    tensors.insert(name.clone(), wrong);
    let metadata = rpn::read_safetensors_metadata(&checkpoint).unwrap();
    let bytes =
        safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .unwrap();
    std::fs::write(&checkpoint, bytes).unwrap();
    refused(&strs(&resume(&["--steps", "5"])), 1, &["checkpoint.safetensors", &name, "has shape"]);

    // A truncated checkpoint.
    std::fs::write(&checkpoint, &before[..100]).unwrap();
    refused(&strs(&resume(&["--steps", "5"])), 1, &["checkpoint.safetensors"]);
}

#[test]
fn evaluating_nothing_is_an_error_not_a_zero_recall() {
    let dir = scratch_dir("hostile-eval");
    let weights = seed001_weights(&dir);
    let w = s(&weights);
    // A COCO directory with images but no annotations.
    let coco = dir.join("coco");
    std::fs::create_dir_all(&coco).unwrap();
    image::RgbImage::new(64, 64).save(coco.join("a.png")).unwrap();
    std::fs::write(
        coco.join("annotations.json"),
        r#"{"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "annotations": [], "categories": []}"#,
    )
    .unwrap();
    refused(
        &["eval", "--weights", w, "--dataset", s(&coco)],
        1,
        &["ground-truth boxes", "undefined"],
    );
    // No images at all.
    std::fs::write(
        coco.join("annotations.json"),
        r#"{"images": [], "annotations": [], "categories": []}"#,
    )
    .unwrap();
    refused(&["eval", "--weights", w, "--dataset", s(&coco)], 1, &["no images"]);
    // An image size the network cannot tile.
    refused(&["eval", "--weights", w, "--image-size", "33"], 2, &["--image-size 33", "stride"]);
}

#[test]
fn the_library_refuses_non_finite_pixels_and_zero_sizes() {
    use candle_nn::{VarBuilder, VarMap};
    let arch: rpn::Architecture = "seed001".parse().unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    let model = arch.network.build(vb).unwrap();
    let options = rpn::ProposerOptions::default();
    let proposer = rpn::Proposer::from_model(&arch, model, Some(32), options).unwrap();
    let size = rpn_anchors::ImageSize::new(32, 32).unwrap();
    let mut pixels = vec![0.5f32; 32 * 32 * 3];
    pixels[7] = f32::NAN;
    let err = proposer.propose_pixels(&pixels, 1, size).unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("value 7"), "{err}");
    // Sizes whose product overflows are a length error, not an overflow.
    let huge = rpn_anchors::ImageSize::new(u32::MAX, u32::MAX).unwrap();
    let err = proposer.propose_pixels(&[], usize::MAX, huge).unwrap_err().to_string();
    assert!(err.contains("pixel buffer length"), "{err}");
    // An image with a zero side is refused by the size type itself.
    assert!(rpn_anchors::ImageSize::new(0, 64).is_err());
}

#[test]
fn molded_matterport_inputs_with_nan_are_refused_before_the_network_runs() {
    use candle_nn::{VarBuilder, VarMap};
    let arch: rpn::Architecture = "matterport-resnet50".parse().unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    let model = arch.network.build(vb).unwrap();
    let proposer =
        rpn::Proposer::from_model(&arch, model, None, rpn::ProposerOptions::default()).unwrap();
    let mut values = vec![0f32; 64 * 64 * 3];
    values[100] = f32::INFINITY;
    let x = candle_core::Tensor::from_vec(values, (1, 64, 64, 3), &candle_core::Device::Cpu);
    let err = proposer.propose_molded(&x.unwrap()).unwrap_err().to_string();
    assert!(err.contains("NaN or infinite"), "{err}");
    let zero = candle_core::Tensor::zeros(
        (0, 64, 64, 3),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    let err = proposer.propose_molded(&zero.unwrap()).unwrap_err().to_string();
    assert!(err.contains("[0, 64, 64, 3]"), "{err}");
}

/// `/dev/zero` (or a link to it with a friendly name) as any input: refused as "not a regular
/// file" at once, never read until memory runs out.
#[cfg(unix)]
#[test]
fn devices_as_inputs_are_refused_not_read_forever() {
    let dir = scratch_dir("hostile-dev");
    let weights = seed001_weights(&dir);
    let zero = |name: &str| {
        let link = dir.join(name);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        link
    };
    let (st, h5, npy_file) = (zero("w.safetensors"), zero("k.h5"), zero("x.npy"));
    let out = dir.join("o.npz");
    refused(&["inspect", s(&st)], 1, &["w.safetensors", "not a regular file"]);
    refused(&["inspect", s(&h5)], 1, &["k.h5", "not a regular file"]);
    let pth = zero("m.pth");
    refused(&["inspect", s(&pth)], 1, &["m.pth", "not a regular file"]);
    refused(
        &["port-torch", s(&pth), "--arch", "torchvision-resnet50-fpn", "-o", s(&out)],
        1,
        &["m.pth", "not a regular file"],
    );
    refused(
        &["port-keras", s(&h5), "--arch", "seed001", "-o", s(&out)],
        1,
        &["not a regular file"],
    );
    let good = dir.join("good.npy");
    npy(&good, "|u1", "(1, 8, 8, 3)", &[0; 192]);
    refused(
        &["forward", "--arch", "seed001", "--weights", s(&st), "--input", s(&good), "-o", s(&out)],
        1,
        &["w.safetensors", "not a regular file"],
    );
    refused(
        &[
            "forward",
            "--arch",
            "seed001",
            "--weights",
            s(&weights),
            "--input",
            s(&npy_file),
            "-o",
            s(&out),
        ],
        1,
        &["x.npy", "not a regular file"],
    );
    refused(&["eval", "--weights", s(&st)], 1, &["not a regular file"]);
    let coco = dir.join("coco");
    std::fs::create_dir_all(&coco).unwrap();
    std::os::unix::fs::symlink("/dev/zero", coco.join("annotations.json")).unwrap();
    refused(
        &["eval", "--weights", s(&weights), "--dataset", s(&coco)],
        1,
        &["annotations.json", "not a regular file"],
    );
    assert!(!out.exists());
}
