"""The README.txt of a synthetic data set: what the data models, at which difficulty, and what it does not."""

from __future__ import annotations

from workbench.data.synth.levels import _LEVELS

_README = """\
Synthetic pre/post-stain cervical image pairs (workbench synthetic generator v{version})

THIS IS NOT MEDICAL DATA. Every image is drawn by a small random program; no patient exists.

Parameters: n={n}, positive_rate={rate}, seed={seed}, size={w}x{h} (width x height),
unlabelled_fraction={unl}, cases_per_patient={cpp}, image_format={fmt},
difficulty={difficulty}, label_noise={noise}, sites={sites}.
Contents: {n} cases, {pos} positive, {labelled} labelled in manifest.csv ({flipped} of them with a
flipped recorded label), {patients} patients.
Reference AUROC of the latent "evidence" (a perfect observer of the generator's latent variables):
{reference}

Files
  cases/<case_id>/pre.{fmt}, post.{fmt}   one pre-stain and one post-stain photograph per case
  manifest.csv       case_id,pre_path,post_path,label,patient_id (paths relative to this folder;
                     label 0/1 is the RECORDED label, flipped for label_noise of the labelled
                     cases; empty for the unlabelled cases)
  ground_truth.csv   case_id,label,recorded_label,patient_id,site,lesion_strength,lesion_area,
                     lookalike_strength,evidence for every case (for simulations only):
                       label              the true label
                       recorded_label     the label in manifest.csv (empty when unlabelled)
                       site               the site/device that took the pictures (site-1 ...)
                       lesion_strength    peak whitening of the lesion in post (0 for negatives)
                       lesion_area        lesion area as a fraction of the cervix area (0 for negatives)
                       lookalike_strength strongest post-only look-alike whitening (0 when none)
                       evidence           max over post-only focal whitenings (lesion foci together,
                                          and each focal look-alike spot) of strength * sqrt(area)
  synth.json         the parameters and reference AUROCs; written last (a folder without it is an
                     interrupted run)

What the data models ({difficulty})
{model}
What it does not model
  - Real anatomy, real lesion appearance or grades, iodine staining, blood, mucus, speculum and
    other instruments, motion blur, real camera optics, realistic prevalence or any link
    between these images and clinical outcomes. Results on this data say nothing about clinical
    performance; use it to exercise and benchmark the pipeline.
"""


_MODEL_EASY = """\
  - A pinkish cervix-like disk with a dark os, mucosal texture, a redder zone around the os,
    red vessels, on a dark background. Patients share tissue colour and cervix shape.
  - Positive cases: one "acetowhite" lesion, an irregular soft-edged blob (12-20% of the cervix
    diameter) that looks like normal tissue in pre and turns bright and low-saturated in post
    (strength 0.6-0.9). It can only be recognised by comparing post with pre.
  - Confounders in every case: whitish look-alike spots present in BOTH images at the same
    place, small specular highlights that differ between shots, exposure and white-balance drift,
    slight misalignment (shift, rotation, scale) between the shots, a yellow/brown stain tint in
    every post image, and (in some cases) a faint, small post-only whitening far below lesion size.
    Lesions and look-alikes do not overlap in strength: this level is easy on purpose.
"""


#: Placeholders read the level's fields (``{lv.shift}``), so the text cannot drift from the numbers.
_MODEL_LEVEL = """\
  - A pinkish cervix-like disk with a dark os, mucosal texture, a redder zone around the os,
    red vessels, on a dark background. Patients share tissue colour and cervix shape.
  - Positive cases: an "acetowhite" lesion that looks like normal tissue in pre and whitens in
    post. Strength = {lv.strength[0]} + {s_span} * Beta({lv.strength[2]}, {lv.strength[3]}) (faint to dense); diameter / cervix
    diameter log-normal (median {lv.diameter[0]}, sigma {lv.diameter[1]}, clipped to {lv.diameter_clip[0]}-{lv.diameter_clip[1]}); with
    probability {lv.multifocal} split into 2-3 foci; each focus elongated (aspect up to {lv.elongation}) and its
    whitening textured (amplitude {lv.texture}).
  - Post-only look-alikes in any case (negatives and positives): focal acetowhite-like spots
    (Poisson mean {lv.spot_rate} per case, strength {lv.spot_strength[0]} + {p_span} * Beta({lv.spot_strength[2]}, {lv.spot_strength[3]}),
    diameter median {lv.spot_diameter[0]} of the cervix), so the faintest, smallest lesions overlap them;
    a squamous-metaplasia-like diffuse faint whitening near the os (probability {lv.metaplasia},
    strength {lv.metaplasia_strength[0]}-{lv.metaplasia_strength[1]}, 25-50% of the cervix radius); extra large glare patches in post
    (probability {lv.glare}). Plus whitish spots present identically in BOTH images.
  - Between the two shots: shift up to {lv.shift:.0%} of the image side, rotation up to {lv.rotation} degrees,
    scale +-{lv.scale:.0%}; exposure (log sd {lv.exposure}), white balance (log sd {lv.white_balance}) and gamma (log sd
    {lv.gamma}) drift; Gaussian blur up to {lv.blur} px (at 256 px); off-centre vignetting up to {lv.vignette};
    sensor noise sd {lv.noise}; a yellow/brown stain tint in every post image.
  - Patients: a log-normal patient risk (sigma {lv.risk_sigma}); the positives are drawn with probability
    proportional to it, so positives cluster within patients.
"""


_SITES_NOTE = """\
  - Sites (sites > 1): each patient belongs to one site; a site has its own colour cast,
    exposure, internal resolution (50-100%, rendered down then up to the output size), JPEG
    quality (70-95) and extra sensor noise.
"""


def _model_text(difficulty: str) -> str:
    if difficulty == "easy":
        return _MODEL_EASY + _SITES_NOTE
    lv = _LEVELS[difficulty]
    return (
        _MODEL_LEVEL.format(
            lv=lv,
            s_span=round(lv.strength[1] - lv.strength[0], 3),
            p_span=round(lv.spot_strength[1] - lv.spot_strength[0], 3),
        )
        + _SITES_NOTE
    )


def _fmt(value: float) -> str:
    return f"{value:.4f}"


_README_FAULTS = """
Planted pair faults (swap_rate={swap_rate}, mismatch_rate={mismatch_rate})
  - {swapped} case(s) SWAPPED: their pre.{fmt} holds the post-stain photograph and post.{fmt} the
    pre-stain one.
  - {mismatched} case(s) MISMATCHED: their post.{fmt} is a byte copy of the post-stain photograph of
    an unfaulted case of ANOTHER patient (not the same cervix as their pre.{fmt}).
  - ground_truth.csv column pair_fault says which (swapped, mismatched, or empty). Labels, lesion and
    evidence columns describe the case as rendered, before the fault.
"""


def _na(value: float | None) -> str:
    return "n/a (one class only)" if value is None else f"{value:.3f}"
