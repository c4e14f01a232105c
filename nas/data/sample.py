"""The bundled sample task: generated English movie-review sentiment, no files, no network.

Sentences are built from templates and word lists with the phenomena that make sentiment more than a
bag of words: negation ("was not good"), intensifiers ("truly awful"), contrast clauses where the
second clause decides ("the plot was dull, but the acting was superb") and neutral filler ("i saw it on
a sunday."). A small deterministic share of labels is flipped, so no model reaches 100 %.

A bag-of-words classifier gets about 80 % (negation and contrast defeat it); a fine-tuned transformer
gets close to the noise ceiling, so students of different sizes separate measurably.
"""

from __future__ import annotations

import random

from nas.data import Split, Task

LABEL_NAMES = ["negative", "positive"]

# Word lists: adjectives by polarity carry the signal; everything else is shared by both classes. The adjective
# lists are public so tests can check the signal (a plain sentence ends in its adjective).
POSITIVE_WORDS = [
    "good", "great", "excellent", "wonderful", "delightful", "charming", "brilliant", "enjoyable",
    "moving", "superb", "clever", "gripping", "beautiful", "funny", "memorable", "fresh",
]
NEGATIVE_WORDS = [
    "bad", "awful", "terrible", "boring", "dull", "tedious", "weak", "clumsy",
    "bland", "painful", "mediocre", "lifeless", "forgettable", "messy", "predictable", "stale",
]
_SUBJECTS = [
    "the movie", "the film", "the plot", "the acting", "the script", "the soundtrack", "the ending",
    "the cast", "the dialogue", "the direction", "the story", "the pacing", "the lead", "the humor",
]
_VERBS = ["was", "is", "felt", "seemed", "looked"]
_INTENSIFIERS = ["", "", "", "very", "really", "truly", "incredibly", "quite", "rather", "remarkably", "so"]
_NEGATED_INTENSIFIERS = ["", "", "very", "really", "that", "so", "at all"]  # ones that read naturally after "not"
_FILLER = [
    "i saw it on a sunday.", "my friend picked it.", "it runs about two hours.", "we went to the late show.",
    "the theater was half empty.", "i had read the book first.", "it opened last week.", "i went in with no expectations.",
]
_CONTRAST = ["{a}, but {b}", "{a} but {b}", "although {a}, {b}", "{a}; however, {b}", "even though {a}, {b}"]

# Template mix (shares of examples): plain clause, negated clause, contrast, filler + clause.
_KIND_WEIGHTS = {"plain": 0.45, "negated": 0.15, "contrast": 0.25, "filler": 0.15}
NEGATION_RATE = 0.2  # chance that a clause of a contrast or filler sentence is negated
LABEL_NOISE = 0.05  # share of labels flipped; caps any model at about 95 % accuracy


def _clause(rng: random.Random, positive: bool, negation_rate: float) -> str:
    """One clause whose meaning is ``positive``, negated with probability ``negation_rate``."""
    negated = rng.random() < negation_rate
    # A negated clause says "not <opposite adjective>", so the adjective alone misleads bag-of-words.
    adjective_positive = positive != negated
    adjective = rng.choice(POSITIVE_WORDS if adjective_positive else NEGATIVE_WORDS)
    subject, verb = rng.choice(_SUBJECTS), rng.choice(_VERBS)
    if negated:
        intensifier = rng.choice(_NEGATED_INTENSIFIERS)
        if intensifier == "at all":  # "not good at all", not "not at all good"
            return f"{subject} {verb} not {adjective} at all"
        words = [subject, verb, "not", intensifier, adjective]
    else:
        words = [subject, verb, rng.choice(_INTENSIFIERS), adjective]
    return " ".join(w for w in words if w)


def _sentence(rng: random.Random, positive: bool) -> str:
    """One review sentence whose overall sentiment is ``positive``."""
    kind = rng.choices(list(_KIND_WEIGHTS), weights=list(_KIND_WEIGHTS.values()))[0]
    if kind == "plain":
        return _clause(rng, positive, negation_rate=0.0) + "."
    if kind == "negated":
        return _clause(rng, positive, negation_rate=1.0) + "."
    if kind == "contrast":
        # The first clause usually disagrees with the verdict, which the second clause decides.
        first_positive = (not positive) if rng.random() < 0.8 else positive
        first = _clause(rng, first_positive, negation_rate=NEGATION_RATE)
        second = _clause(rng, positive, negation_rate=NEGATION_RATE)
        return rng.choice(_CONTRAST).format(a=first, b=second) + "."
    return rng.choice(_FILLER) + " " + _clause(rng, positive, negation_rate=NEGATION_RATE) + "."


def make_sample_task(n_train: int = 2000, n_validation: int = 400, n_test: int = 400, seed: int = 0) -> Task:
    """Generate the sample sentiment task, deterministically.

    Sentences are unique across all splits, so ``validation`` and ``test`` are truly held out. ``test``
    is drawn first, then ``validation``, then ``train``: changing ``n_train`` keeps the other two fixed.

    Args:
        n_train: Training examples; ≥ 2.
        n_validation: Validation examples; ≥ 1.
        n_test: Test examples; ≥ 0 (0 omits the split).
        seed: Seeds the generator; the same seed always gives an identical task.

    Returns:
        A binary task (0 = negative, 1 = positive), labels balanced to within a few percent, about
        5 % of labels flipped (see ``LABEL_NOISE``).

    Raises:
        ValueError: If a size is out of range.

    Example:
        >>> task = make_sample_task(n_train=20, n_validation=5, n_test=5)
        >>> len(task.splits["train"]), task.label_names
        (20, ['negative', 'positive'])
    """
    if n_train < 2 or n_validation < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 2, n_validation >= 1, n_test >= 0; got {n_train=}, {n_validation=}, {n_test=}")
    rng = random.Random(seed)  # stdlib Mersenne Twister: identical streams on every platform and version
    seen: set[str] = set()
    splits: dict[str, Split] = {}
    for split_name, n in (("test", n_test), ("validation", n_validation), ("train", n_train)):
        texts: list[str] = []
        labels: list[int] = []
        attempts = 0
        while len(texts) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"sample generator ran out of unique sentences for {split_name} ({n} wanted)")
            positive = rng.random() < 0.5
            text = _sentence(rng, positive)
            if text in seen:
                continue
            seen.add(text)
            label = int(positive)
            if rng.random() < LABEL_NOISE:
                label = 1 - label
            texts.append(text)
            labels.append(label)
        if n:
            splits[split_name] = Split(texts, labels)
    ordered = {k: splits[k] for k in ("train", "validation", "test") if k in splits}
    return Task(name="sample", splits=ordered, num_labels=2, label_names=list(LABEL_NAMES))
