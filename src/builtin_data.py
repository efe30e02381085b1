"""The built-in default dataset, generated deterministically so the repo ships no third-party data.

Task: read one sentence about a person and answer with a JSON object {"name", "age", "job", "city"} in a
fixed key order. SmolLM2-135M-Instruct does not do this out of the box (it paraphrases, or emits other keys),
it is learnable in a few dozen QLoRA steps on a CPU, and it has an exact, automatic task metric.
"""

from __future__ import annotations

import json
import random

NAMES = (
    "Ana Bruno Chloe Dmitri Elena Farid Grace Hiro Ines Jonas Kavya Liam Mei Nadia Omar Priya "
    "Quentin Rosa Sven Tariq Uma Victor Wen Ximena Yusuf Zoe Aiko Bilal Carmen Diego Emma Felix "
    "Giulia Hassan Ivy Jakob Keiko Lucas Maya Nikos Olga Pablo Rania Sofia Tomas Valeria Wanjiru "
    "Yara Arjun Beatriz Cyrus Dalia Erik Fatima Gustav Hana Idris Julia"
).split()
JOBS = (
    "nurse carpenter pilot teacher chemist baker architect plumber librarian journalist "
    "electrician dentist farmer translator geologist firefighter tailor pharmacist photographer "
    "mechanic economist florist surgeon welder cartographer beekeeper locksmith veterinarian "
    "violinist accountant astronomer potter"
).split()
CITIES = (
    "Lisbon Nairobi Osaka Lima Oslo Cairo Toronto Hanoi Krakow Santiago Dublin Mumbai Porto Seoul "
    "Tunis Vienna Quito Perth Bergen Accra Lyon Tbilisi Denver Manila Zurich Bogota Helsinki "
    "Dakar Adelaide Valencia"
).split()
SENTENCES = [
    "{name} is a {age}-year-old {job} from {city}.",
    "Meet {name}: {age} years old, works as {a_job} and lives in {city}.",
    "{city} is home to {name}, {a_job} aged {age}.",
    "At {age}, {name} works as {a_job} in {city}.",
    "Our new {job}, {name}, just moved here from {city} and turned {age} last month.",
    "{name} ({age}) has been {a_job} in {city} for years.",
    "Born {age} years ago, {name} now lives in {city} and works as {a_job}.",
]
INSTRUCTIONS = [
    "Extract the person's name, age, job and city as JSON.",
    "Return a JSON object with the keys name, age, job and city for the person described.",
    "Read the sentence and give name, age, job and city as JSON.",
]


def person_json(name: str, age: int, job: str, city: str) -> str:
    """The one accepted answer format: compact JSON, fixed key order, age as a number."""
    return json.dumps({"name": name, "age": age, "job": job, "city": city})


def extract_json_examples(count: int, seed: int = 0) -> list[dict]:
    """`count` conversations in the `messages` format, identical for the same (count, seed)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        person = {
            "name": rng.choice(NAMES),
            "age": rng.randint(19, 78),
            "job": rng.choice(JOBS),
            "city": rng.choice(CITIES),
        }
        a_job = ("an " if person["job"][0] in "aeiou" else "a ") + person["job"]
        sentence = rng.choice(SENTENCES).format(a_job=a_job, **person)
        prompt = f"{rng.choice(INSTRUCTIONS)}\n\n{sentence}"
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": person_json(**person)},
                ]
            }
        )
    return rows


# The harder task's cities (far more than its 48 training examples): the country must come from what the
# model knew before fine-tuning, so training longer or harder than needed costs eval loss.
CITY_COUNTRIES = {
    "Lisbon": "Portugal",
    "Porto": "Portugal",
    "Madrid": "Spain",
    "Valencia": "Spain",
    "Seville": "Spain",
    "Bilbao": "Spain",
    "Paris": "France",
    "Lyon": "France",
    "Marseille": "France",
    "Bordeaux": "France",
    "Berlin": "Germany",
    "Munich": "Germany",
    "Hamburg": "Germany",
    "Cologne": "Germany",
    "Rome": "Italy",
    "Milan": "Italy",
    "Naples": "Italy",
    "Turin": "Italy",
    "Vienna": "Austria",
    "Graz": "Austria",
    "Zurich": "Switzerland",
    "Geneva": "Switzerland",
    "Amsterdam": "Netherlands",
    "Rotterdam": "Netherlands",
    "Brussels": "Belgium",
    "Antwerp": "Belgium",
    "Dublin": "Ireland",
    "Cork": "Ireland",
    "London": "England",
    "Manchester": "England",
    "Edinburgh": "Scotland",
    "Glasgow": "Scotland",
    "Oslo": "Norway",
    "Bergen": "Norway",
    "Stockholm": "Sweden",
    "Gothenburg": "Sweden",
    "Copenhagen": "Denmark",
    "Aarhus": "Denmark",
    "Helsinki": "Finland",
    "Tampere": "Finland",
    "Warsaw": "Poland",
    "Krakow": "Poland",
    "Prague": "Czechia",
    "Brno": "Czechia",
    "Budapest": "Hungary",
    "Bucharest": "Romania",
    "Sofia": "Bulgaria",
    "Athens": "Greece",
    "Thessaloniki": "Greece",
    "Istanbul": "Turkey",
    "Ankara": "Turkey",
    "Kyiv": "Ukraine",
    "Lviv": "Ukraine",
    "Tbilisi": "Georgia",
    "Yerevan": "Armenia",
    "Cairo": "Egypt",
    "Alexandria": "Egypt",
    "Tunis": "Tunisia",
    "Algiers": "Algeria",
    "Casablanca": "Morocco",
    "Marrakesh": "Morocco",
    "Dakar": "Senegal",
    "Accra": "Ghana",
    "Lagos": "Nigeria",
    "Abuja": "Nigeria",
    "Nairobi": "Kenya",
    "Mombasa": "Kenya",
    "Kampala": "Uganda",
    "Kigali": "Rwanda",
    "Addis Ababa": "Ethiopia",
    "Johannesburg": "South Africa",
    "Cape Town": "South Africa",
    "Durban": "South Africa",
    "Luanda": "Angola",
    "Harare": "Zimbabwe",
    "Mumbai": "India",
    "Delhi": "India",
    "Chennai": "India",
    "Kolkata": "India",
    "Karachi": "Pakistan",
    "Lahore": "Pakistan",
    "Dhaka": "Bangladesh",
    "Colombo": "Sri Lanka",
    "Kathmandu": "Nepal",
    "Bangkok": "Thailand",
    "Chiang Mai": "Thailand",
    "Hanoi": "Vietnam",
    "Saigon": "Vietnam",
    "Manila": "Philippines",
    "Cebu": "Philippines",
    "Jakarta": "Indonesia",
    "Bandung": "Indonesia",
    "Kuala Lumpur": "Malaysia",
    "Singapore": "Singapore",
    "Seoul": "South Korea",
    "Busan": "South Korea",
    "Tokyo": "Japan",
    "Osaka": "Japan",
    "Kyoto": "Japan",
    "Beijing": "China",
    "Shanghai": "China",
    "Chengdu": "China",
    "Taipei": "Taiwan",
    "Ulaanbaatar": "Mongolia",
    "Tehran": "Iran",
    "Baghdad": "Iraq",
    "Riyadh": "Saudi Arabia",
    "Dubai": "United Arab Emirates",
    "Doha": "Qatar",
    "Amman": "Jordan",
    "Beirut": "Lebanon",
    "Toronto": "Canada",
    "Montreal": "Canada",
    "Vancouver": "Canada",
    "Calgary": "Canada",
    "Denver": "United States",
    "Chicago": "United States",
    "Boston": "United States",
    "Seattle": "United States",
    "Houston": "United States",
    "Mexico City": "Mexico",
    "Guadalajara": "Mexico",
    "Havana": "Cuba",
    "Bogota": "Colombia",
    "Medellin": "Colombia",
    "Quito": "Ecuador",
    "Lima": "Peru",
    "Cusco": "Peru",
    "La Paz": "Bolivia",
    "Santiago": "Chile",
    "Valparaiso": "Chile",
    "Buenos Aires": "Argentina",
    "Cordoba": "Argentina",
    "Montevideo": "Uruguay",
    "Asuncion": "Paraguay",
    "Sao Paulo": "Brazil",
    "Recife": "Brazil",
    "Caracas": "Venezuela",
    "Sydney": "Australia",
    "Perth": "Australia",
    "Adelaide": "Australia",
    "Brisbane": "Australia",
    "Auckland": "New Zealand",
    "Wellington": "New Zealand",
}
ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
RELATIONS = ("colleague", "neighbour", "cousin", "friend", "landlord", "former classmate")
PAIR_SENTENCES = [
    "{name} ({age}), {a_job} from {city}, shares a flat with {other_name}, {other_age}, {a_other_job} "
    "from {other_city}.",
    "{other_name} is {a_other_job} in {other_city} aged {other_age}; their {relation} {name} is "
    "{age} and works as {a_job} in {city}.",
    "When {other_name} ({other_age}, {other_city}) retired as {a_other_job}, {relation} {name}, {age}, "
    "took over as {a_job} and moved to {city}.",
]
HARD_INSTRUCTIONS = [
    "Return name, age, job, city and country of {name} as JSON.",
    "Give the details of {name} (name, age, job, city, country) as a JSON object.",
    "Extract {name}'s name, age, job, city and the city's country as JSON.",
]


def age_in_words(age: int) -> str:
    """19 -> 'nineteen', 42 -> 'forty-two'."""
    if age < 20:
        return ONES[age]
    tens, ones = divmod(age, 10)
    return TENS[tens] + (f"-{ONES[ones]}" if ones else "")


def _person(rng: random.Random) -> dict:
    return {
        "name": rng.choice(NAMES),
        "age": rng.randint(19, 78),
        "job": rng.choice(JOBS),
        "city": rng.choice(sorted(CITY_COUNTRIES)),
    }


def _with_article(job: str) -> str:
    return ("an " if job[0] in "aeiou" else "a ") + job


def extract_json_hard_examples(count: int, seed: int = 0) -> list[dict]:
    """A harder variant of `extract_json` that does not saturate in a few epochs (the sweep grid's task):
    every sentence names two people and the instruction asks about one of them, half the ages are written
    out in words ("forty-two"), and the answer adds the city's country, which the sentence does not say:
    the model must pick the right person, convert the number and recall the country."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        person, other = _person(rng), _person(rng)
        while other["name"] == person["name"]:
            other["name"] = rng.choice(NAMES)
        words = rng.random() < 0.5
        sentence = rng.choice(PAIR_SENTENCES).format(
            name=person["name"],
            age=age_in_words(person["age"]) if words else person["age"],
            a_job=_with_article(person["job"]),
            city=person["city"],
            other_name=other["name"],
            other_age=age_in_words(other["age"]) if words else other["age"],
            a_other_job=_with_article(other["job"]),
            other_city=other["city"],
            relation=rng.choice(RELATIONS),
        )
        prompt = f"{rng.choice(HARD_INSTRUCTIONS).format(name=person['name'])}\n\n{sentence}"
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": prompt},
                    {
                        "role": "assistant",
                        "content": json.dumps({**person, "country": CITY_COUNTRIES[person["city"]]}),
                    },
                ]
            }
        )
    return rows


# The second grid's task (`arithmetic`): another skill than extraction, so a sweep design tuned on one task
# can be checked on the other. Small numbers on purpose: SmolLM2-135M half-knows such sums and products, so
# training keeps improving how often each step's result is right (eval loss does not flatten at the floor
# of results it cannot compute, as with 3-digit products), and over-training 48 examples costs eval loss.
ARITHMETIC_STEPS = (
    ("add", "+"),
    ("subtract", "-"),
    ("multiply by", "*"),
)
ARITHMETIC_PROMPTS = [
    "Start with {start}, {steps}. What is the result? Show each step.",
    "Compute step by step: start from {start}, {steps}.",
    "Take the number {start}, {steps}. Work it out one step at a time.",
]


def _apply(value: int, symbol: str, operand: int) -> int:
    return {"+": value + operand, "-": value - operand, "*": value * operand}[symbol]


def arithmetic_examples(count: int, seed: int = 0) -> list[dict]:
    """`count` multi-step arithmetic conversations: three operations applied left to right to a start
    number (2-20), answered one line per step and a last line `Answer: N`. Operands 2-12 for sums and
    differences, 2-3 for products; a difference that would go below zero becomes a sum."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        value = rng.randint(2, 20)
        start, words, lines = value, [], []
        for _step in range(3):
            verb, symbol = rng.choice(ARITHMETIC_STEPS)
            operand = rng.randint(2, 3) if symbol == "*" else rng.randint(2, 12)
            if symbol == "-" and operand > value:
                verb, symbol = "add", "+"
            result = _apply(value, symbol, operand)
            words.append(f"{verb} {operand}")
            lines.append(f"{value} {symbol} {operand} = {result}")
            value = result
        steps = ", ".join(words[:-1]) + f", then {words[-1]}"
        prompt = rng.choice(ARITHMETIC_PROMPTS).format(start=start, steps=steps)
        answer = "\n".join([*lines, f"Answer: {value}"])
        rows.append(
            {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
        )
    return rows


BUILTIN = {
    "extract_json": extract_json_examples,
    "extract_json_hard": extract_json_hard_examples,
    "arithmetic": arithmetic_examples,
}
