"""Deterministic synthetic pre/post-stain cervical image pairs for demos, tests and benchmarks.

Why: the workbench needs data it can ship, regenerate byte for byte, and still learn from. The generator
models the one thing the real task depends on, an *acetowhite* lesion that is only visible by comparing the
post-stain photograph with the pre-stain one, among confounders that make either image alone misleading.

Difficulty levels (``difficulty=``): ``"easy"`` is the generator of version 1, pixel for pixel (its lesions
are far stronger and larger than any look-alike; a hand-written whitening score separates it almost
perfectly). ``"realistic"`` (the default) and ``"hard"`` use the model described after the easy one, in which
faint, small lesions overlap post-only look-alikes, so only part of the positives are recognisable.

Easy generative model (all geometry in units of ``s = min(width, height)``, all colours in 0-255 RGB):

* **Patient.** Cases are grouped into patients (about ``cases_per_patient`` cases each). A patient fixes the
  base tissue colour, the cervix size and shape and the os orientation; each case jitters them slightly.
* **Scene** (shared by pre and post of a case, in scene coordinates):

  - a dark reddish-brown background with vignetting;
  - a pinkish, slightly elliptical cervix disk (diameter 0.66-0.84 s, irregular rim, dome shading);
  - mucosal texture: multiplicative low-frequency noise at two scales plus a redder ectropion-like zone
    around the os;
  - the os: a dark red slit/ellipse near the centre;
  - red vessels: 3-8 thin smooth random curves inside the cervix;
  - look-alike white spots: 1-3 irregular whitish blobs (same size and whiteness range as lesions) that
    are present, identical, in *both* images, so whiteness alone is not evidence.
* **Lesion** (positives only): one irregular blob (union of 4-7 Gaussians, soft edges), diameter 12-20% of
  the cervix diameter, random position inside the cervix, away from look-alike spots. It is normal tissue in
  pre and blends towards a bright low-saturation white (strength 0.6-0.9) in post.
* **Hard negatives** (any case, probability 0.4): one faint, small post-only whitening (diameter about 3-5% of the
  cervix diameter, strength 0.10-0.25), well below lesion size and contrast.
* **Per shot** (pre and post independently): 3-10 small saturated specular highlights at random places; a
  small rigid misalignment (shift ~1.5% s per shot, rotation up to ~1.5 degrees, scale +-2%); exposure gain,
  per-channel white-balance gains and a slight gamma change; sensor noise.
* **Post stain tint:** every post image is tinted slightly yellow/brown (blue and green reduced).
* **Labels:** positives drawn uniformly among the cases.

Realistic / hard generative model (the same scene, with these differences; numbers in ``_LEVELS``):

* **Patients share risk.** Each patient draws a log-normal risk (sigma 1); the exactly ``round(n * rate)``
  positives are drawn without replacement with probability proportional to their patient's risk, so
  positives cluster within patients.
* **Lesion** (positives): strength from a Beta distribution (realistic ``0.12 + 0.83 * Beta(3, 1.4)``,
  hard ``0.08 + 0.87 * Beta(3.5, 1.2)``) and diameter / cervix diameter log-normal (median 0.28 / 0.27); with
  probability 0.15 / 0.25 the lesion is instead *faint and small* (strength uniform up to 0.3, half the
  median diameter), which overlaps the focal look-alikes below. With probability 0.25 / 0.35 it is split
  into 2-3 nearby foci; each focus is elongated (aspect up to 2 / 2.5) and its whitening is textured
  (multiplicative smooth noise, amplitude 0.3 / 0.4). Whitening is shaded like the tissue and veils the
  vessels under it.
* **Post-only look-alikes** (any case, positives too): focal acetowhite-like spots (Poisson mean 0.6 / 0.9 per
  case, strength ``0.05 + 0.35 * Beta(1.5, 3)`` / ``0.05 + 0.4 * Beta(1.5, 2.5)``, diameter about 5% of the
  cervix diameter); a squamous-metaplasia-like diffuse faint whitening near the os (probability 0.3 / 0.4,
  strength 0.04-0.15 / 0.05-0.2, radius 25-50% of the cervix radius, smooth); extra large glare patches in
  the post shot (probability 0.2 / 0.3). Whitish spots present in *both* images as in easy (0-3).
* **Per shot:** shift up to 3% / 4% of ``s`` (normal, sd a third of the maximum, clipped), rotation up to
  2.5 / 4 degrees, scale +-3% / +-4%; exposure (log sd 0.10 / 0.13), white balance (0.05 / 0.06) and gamma
  (0.07 / 0.09) drift; Gaussian blur up to 0.8 / 1.1 px at 256 px; off-centre vignetting up to 0.25 / 0.3;
  sensor noise sd 2 / 2.5; the post stain tint.
* **Latent variables** (``ground_truth.csv``): ``lesion_strength``, ``lesion_area`` (sum of the soft lesion
  mask over the cervix area), ``lookalike_strength`` (strongest post-only look-alike, focal or diffuse) and
  ``evidence = max(strength * sqrt(area))`` over the post-only *focal* whitenings (the lesion's foci taken
  together, and each focal look-alike spot; diffuse metaplasia and glare are told apart by shape and are
  left out). Its AUROC is the Bayes-level reference written to ``synth.json`` and ``README.txt``.

Options for every level:

* **Sites** (``sites`` > 1): each site draws a device profile (colour cast, exposure, internal resolution
  50-100% of the output size: rendered there and resized up, JPEG quality 70-95, extra sensor noise); each
  patient belongs to one site (``site`` column of ``ground_truth.csv``; not in the manifest). ``sites=1`` is
  one standard device (no profile applied). For easy the site profile is applied to the finished image.
* **Label noise** (``label_noise`` in [0, 0.5)): exactly ``round(label_noise * labelled)`` labelled cases
  get the other label in ``manifest.csv``; ``ground_truth.csv`` keeps the truth (``label``) and the
  recorded label (``recorded_label``).
* **Pair faults** (``swap_rate``, ``mismatch_rate``, each in [0, 0.5]): what a data pipeline does to pairs,
  planted after rendering so every image stays as generated. Exactly ``round(n * swap_rate)`` cases get
  their pre and post files exchanged (*swapped*), and exactly ``round(n * mismatch_rate)`` other cases get
  their post file replaced by the post file of an unfaulted case of another patient (*mismatched*; the
  bytes are copied, so two cases share that post file). ``ground_truth.csv`` then gains a ``pair_fault``
  column (``swapped``, ``mismatched`` or empty) and ``synth.json`` the two rates; with both rates 0 the
  output is byte-identical to what it was before these options existed.

Not modelled: real anatomy and pathology variation, iodine (Schiller) staining, blood, mucus, instruments
(speculum), motion blur, camera optics, or any link to real prevalence. The data exists to exercise the
pipeline and to make the pre/post comparison necessary; it says nothing about clinical use.

Output layout (the project's import format, both variants at once)::

    OUT/cases/<case_id>/pre.<fmt>, post.<fmt>
    OUT/manifest.csv        case_id,pre_path,post_path,label,patient_id  (label empty when unlabelled)
    OUT/ground_truth.csv    case_id,label,recorded_label,patient_id,site,lesion_strength,lesion_area,
                            lookalike_strength,evidence[,pair_fault]       (all cases, true labels)
    OUT/README.txt          what the data models and does not model
    OUT/synth.json          parameters and reference AUROCs; written last (absent: an incomplete run)

Same parameters and seed give byte-identical files (fixed JPEG quality, no metadata).

Modules: ``options`` (limits, ``SynthSummary``, argument checks), ``design`` (labels, patients, unlabelled
cases, label noise, pair faults), ``drawing`` and ``anatomy`` (brushes and the cervix), ``easy`` and
``realistic`` (the two generative models), ``levels`` (difficulty presets and site profiles), ``files``
(layout, writing, reuse), ``readme`` (README.txt) and ``generate`` (``generate_dataset``).
"""

from workbench.data.synth.files import PAIR_FAULT_COLUMN, PAIR_FAULTS, TRUTH_COLUMNS
from workbench.data.synth.generate import generate_dataset
from workbench.data.synth.options import DIFFICULTIES, GENERATOR_VERSION, SynthSummary, parse_size

__all__ = [
    "DIFFICULTIES",
    "GENERATOR_VERSION",
    "PAIR_FAULTS",
    "PAIR_FAULT_COLUMN",
    "TRUTH_COLUMNS",
    "SynthSummary",
    "generate_dataset",
    "parse_size",
]
