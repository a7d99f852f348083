"""The subjects of the skewed text stream's skills: a small vocabulary and a large one.

`small` (the default, and every committed measurement before 2026-12-03) is 12 antonym pairs
and 10 countries, so each skill has at most 66 distinct prompts (22 words x 3 paraphrases):
an eval set of 200 records a skill repeats prompts and carries far less than 200 records of
information. `large` adds common English antonyms and countries (single words, answers a
135M instruct model can know) so that opposites, capitals, tags and dashed spellings each
have several hundred distinct prompts. The made-up Zorbian dictionary stays on the small
list in both: it can only be learned from training records, and 20-40 of them cannot teach
a dictionary of hundreds of words.
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL_OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "up": "down", "day": "night", "wet": "dry",
                   "old": "young", "happy": "sad", "light": "dark", "early": "late", "open": "closed",
                   "full": "empty"}
SMALL_CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
                  "Egypt": "Cairo", "Canada": "Ottawa", "Greece": "Athens", "Russia": "Moscow", "Kenya": "Nairobi"}

# One-word antonyms; each key has one common answer (pairs that read both ways are listed both ways).
_MORE_OPPOSITES = {
    "cold": "hot", "small": "big", "slow": "fast", "down": "up", "night": "day", "dry": "wet", "young": "old",
    "sad": "happy", "dark": "light", "late": "early", "empty": "full", "high": "low", "low": "high",
    "long": "short", "hard": "soft", "soft": "hard", "rich": "poor", "poor": "rich", "strong": "weak",
    "weak": "strong", "thick": "thin", "thin": "thick", "clean": "dirty", "dirty": "clean", "loud": "quiet",
    "quiet": "loud", "near": "far", "far": "near", "inside": "outside", "outside": "inside", "win": "lose",
    "lose": "win", "push": "pull", "pull": "push", "buy": "sell", "sell": "buy", "give": "take",
    "take": "give", "true": "false", "false": "true", "good": "bad", "bad": "good", "black": "white",
    "white": "black", "north": "south", "south": "north", "east": "west", "west": "east", "first": "last",
    "top": "bottom", "bottom": "top", "alive": "dead", "dead": "alive", "cheap": "expensive",
    "expensive": "cheap", "deep": "shallow", "shallow": "deep", "friend": "enemy", "enemy": "friend",
    "tall": "short", "wide": "narrow", "narrow": "wide", "safe": "dangerous", "dangerous": "safe",
    "love": "hate", "hate": "love", "always": "never", "never": "always", "before": "after",
    "after": "before", "above": "below", "below": "above", "question": "answer", "entrance": "exit",
    "exit": "entrance", "laugh": "cry", "accept": "refuse", "increase": "decrease", "decrease": "increase",
    "maximum": "minimum", "minimum": "maximum", "summer": "winter", "winter": "summer", "polite": "rude",
    "rude": "polite", "heavy": "light", "ancient": "modern", "sunrise": "sunset", "sunset": "sunrise",
    "import": "export", "export": "import", "inhale": "exhale", "exhale": "inhale", "victory": "defeat",
    "success": "failure", "failure": "success", "present": "absent", "absent": "present",
    "visible": "invisible", "possible": "impossible", "legal": "illegal", "correct": "incorrect",
    "honest": "dishonest", "agree": "disagree", "appear": "disappear", "include": "exclude",
    "exclude": "include", "inner": "outer", "outer": "inner", "upper": "lower", "forward": "backward",
    "backward": "forward", "positive": "negative", "negative": "positive", "male": "female",
    "female": "male", "king": "queen", "queen": "king", "boy": "girl", "girl": "boy", "man": "woman",
    "woman": "man", "husband": "wife", "wife": "husband", "brother": "sister", "sister": "brother",
    "father": "mother", "mother": "father", "son": "daughter", "daughter": "son", "uncle": "aunt",
    "aunt": "uncle", "closed": "open", "arrive": "leave", "remember": "forget", "forget": "remember",
    "wild": "tame", "sharp": "blunt", "smooth": "rough", "rough": "smooth", "sweet": "sour", "sour": "sweet",
}
# Countries and capitals of one word each, the well-known ones.
_MORE_CAPITALS = {
    "China": "Beijing", "England": "London", "Ireland": "Dublin", "Portugal": "Lisbon", "Austria": "Vienna",
    "Poland": "Warsaw", "Sweden": "Stockholm", "Norway": "Oslo", "Finland": "Helsinki",
    "Denmark": "Copenhagen", "Netherlands": "Amsterdam", "Belgium": "Brussels", "Switzerland": "Bern",
    "Hungary": "Budapest", "Romania": "Bucharest", "Bulgaria": "Sofia", "Ukraine": "Kyiv",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Syria": "Damascus", "Lebanon": "Beirut",
    "Jordan": "Amman", "Pakistan": "Islamabad", "Afghanistan": "Kabul", "Bangladesh": "Dhaka",
    "Nepal": "Kathmandu", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "Philippines": "Manila", "Mongolia": "Ulaanbaatar", "Australia": "Canberra", "Cuba": "Havana",
    "Chile": "Santiago", "Peru": "Lima", "Venezuela": "Caracas", "Ecuador": "Quito",
    "Uruguay": "Montevideo", "Morocco": "Rabat", "Algeria": "Algiers", "Tunisia": "Tunis", "Libya": "Tripoli",
    "Nigeria": "Abuja", "Ghana": "Accra", "Uganda": "Kampala", "Zimbabwe": "Harare", "Senegal": "Dakar",
    "Sudan": "Khartoum", "Iceland": "Reykjavik", "Estonia": "Tallinn", "Latvia": "Riga",
    "Lithuania": "Vilnius", "Serbia": "Belgrade", "Croatia": "Zagreb", "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana", "Cyprus": "Nicosia", "Qatar": "Doha", "Armenia": "Yerevan", "Azerbaijan": "Baku",
    "Uzbekistan": "Tashkent", "Laos": "Vientiane", "Jamaica": "Kingston", "Belarus": "Minsk",
    "Moldova": "Chisinau", "Albania": "Tirana", "Oman": "Muscat", "Angola": "Luanda", "Zambia": "Lusaka",
    "Mozambique": "Maputo", "Madagascar": "Antananarivo", "Somalia": "Mogadishu", "Rwanda": "Kigali",
    "Mali": "Bamako",
}


@dataclass(frozen=True)
class Vocabulary:
    """Which subjects each text skill asks about."""
    opposites: dict[str, str]
    capitals: dict[str, str]
    dictionary_words: tuple[str, ...]   # the Zorbian skill's subjects

    @property
    def words(self) -> tuple[str, ...]:
        """The subjects of the skills that apply to any word (tag, dashed)."""
        return tuple(dict.fromkeys((*self.opposites, *self.capitals)))

    def subjects(self, skill: str) -> tuple[str, ...]:
        return {"opposite": tuple(self.opposites), "capital": tuple(self.capitals),
                "zorbian": self.dictionary_words}.get(skill, self.words)


SMALL = Vocabulary(SMALL_OPPOSITES, SMALL_CAPITALS, tuple(SMALL_OPPOSITES) + tuple(SMALL_CAPITALS))
LARGE = Vocabulary({**SMALL_OPPOSITES, **_MORE_OPPOSITES}, {**SMALL_CAPITALS, **_MORE_CAPITALS},
                   SMALL.dictionary_words)
VOCABULARIES = {"small": SMALL, "large": LARGE}
