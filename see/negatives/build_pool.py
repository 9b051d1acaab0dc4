"""Build ``general.jsonl``, the general-negatives pool shipped for every base.

Run ``python -m see.negatives.build_pool`` to (re)write the file beside this
module (and the composition table in ``README.md``), ``--check`` to verify the
committed files are what this script writes (exit 1 if not), ``--stats`` to
print the composition.

Everything below was written for this project. The output is a pure function
of the lists here and :data:`SEED`: a string seed hashes the same on every
platform, and only ``shuffle`` and ``random`` are drawn, whose algorithms have
been stable across Python 3 releases.

Most queries are written out whole; slot templates are kept to phrasings that
fit any filler, and are dealt round-robin so none is used more than a handful
of times. :func:`validate` holds the pool to the composition rules (size,
uniqueness, caps on narrow task types) so a later edit cannot drift past them.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

SEED = "see-negatives/v1"
OUT = Path(__file__).resolve().parent / "general.jsonl"
README = OUT.with_name("README.md")
STATS_BLOCK = re.compile(r"(<!-- stats -->\n).*?(\n<!-- /stats -->)", re.S)

SIZE = (600, 800)
INSTRUCTED_SHARE = (0.25, 0.40)
CATEGORY_CAP = 0.06
# A user's own task of one of these types would be taught as a negative if the pool held many of them.
NARROW = {"sentiment": 0.03, "arithmetic": 0.03, "string_manipulation": 0.03}
MAX_TEMPLATE_USES = 5
NEAR_DUPLICATE = 0.7  # token-set Jaccard of two inputs


@dataclass(frozen=True)
class Query:
    category: str
    input: str
    instruction: str | None = None
    template: str | None = None  # the shared phrasing it was built from, if any (for reuse limits)


# ============================================================================ content
# Each category is a list of entries: a string is a bare input, a pair is (instruction, input).

HISTORY = [
    "Who was the first emperor of Rome?",
    "When did the Berlin Wall come down?",
    "Why did the Library of Alexandria decline?",
    "What was the Hanseatic League?",
    "Which civilization built Machu Picchu?",
    "Why does the Magna Carta still matter today?",
    "How long did the Hundred Years' War actually last?",
    "What caused the fall of the Western Roman Empire?",
    "Who was Ada Lovelace?",
    "What goods travelled along the Silk Road?",
    "What were the Phoenicians known for?",
    "What did the Rosetta Stone help scholars decipher?",
    "Who was the first person to reach the South Pole?",
    "Why was the printing press such a big deal in the 1400s?",
    "What changed in Japan during the Meiji Restoration?",
    "Which ancient wonder stood in the harbour of Rhodes?",
    "How did the Black Death spread across Europe?",
    "Over how many centuries was the Great Wall of China built?",
    "What was daily life like for a medieval blacksmith?",
    "What were the main causes of World War I?",
    "Tell me about the Byzantine Empire in a few sentences.",
    "Which pharaoh's tomb did Howard Carter discover?",
    "What language did the Aztecs speak?",
    "How did people tell time before mechanical clocks?",
    "Who was Mansa Musa and why is he famous?",
    "Why did the Vikings eventually stop raiding?",
]

SCIENCE = [
    "Why is the sky blue?",
    "How do vaccines train the immune system?",
    "Are viruses and bacteria the same kind of germ?",
    "What makes a metal conduct electricity?",
    "Why do cats purr?",
    "How does photosynthesis work?",
    "Why does ice float on water?",
    "How many bones are in the adult human body?",
    "What is a neutron star?",
    "Why do leaves change colour in autumn?",
    "How do honeybees tell each other where flowers are?",
    "What causes the tides?",
    "Can octopuses really change colour to match their surroundings?",
    "What causes thunder?",
    "What's the hardest natural material?",
    "Why do onions make you cry?",
    "How does a rainbow form?",
    "Is glass a liquid or a solid?",
    "What do mitochondria do?",
    "How do noise-cancelling headphones work?",
    "Why can't we see stars during the day?",
    "At what temperature does water boil on top of Everest?",
    "How do migrating birds find their way?",
    "What is dark matter?",
    "Why do we yawn?",
    "How are diamonds formed?",
]

GEOGRAPHY = [
    "What is the capital of Australia?",
    "Which river is the longest in Europe?",
    "How many countries are there in Africa?",
    "What is the deepest lake in the world?",
    "Where is the Atacama Desert?",
    "Which countries share a border with Switzerland?",
    "Is Iceland part of Europe or North America?",
    "What is the highest mountain in South America?",
    "Why is the Dead Sea so salty?",
    "Name the five largest islands on Earth.",
    "Which US state has the longest coastline?",
    "What's the smallest country in the world by area?",
    "What time zone is New Zealand in?",
    "Which city is called the Venice of the North?",
    "How big is the Sahara compared to the United States?",
    "Where does the Danube start and end?",
    "What's the capital of Canada?",
    "Which country has the most volcanoes?",
    "What are fjords, and where can I see them?",
    "Is Mount Kilimanjaro still an active volcano?",
    "What is the usual boundary between Europe and Asia?",
    "Which desert is the coldest on Earth?",
]

SPORTS = [
    "How does the offside rule work in soccer?",
    "Who has won the most Wimbledon singles titles?",
    "How many players are on a rugby union team?",
    "What is a hat-trick in cricket?",
    "Why is tennis scored 15, 30, 40 instead of 1, 2, 3?",
    "When did women first compete in the Olympics?",
    "How much longer is an ultramarathon than a marathon?",
    "How long is an Olympic swimming pool?",
    "Which country has won the most FIFA World Cups?",
    "What does a designated hitter do in baseball?",
    "How do tiebreaks work in volleyball?",
    "Who holds the world record for the 100 metres?",
    "What's a good warm-up before a 5k race?",
    "How is a curling match scored?",
    "What does the yellow jersey mean in the Tour de France?",
    "How heavy is a typical bowling ball?",
    "What are the basic rules of pickleball?",
    "Why do golfers shout 'fore'?",
]

COOKING = [
    "How long should I boil an egg for a runny yolk?",
    "Can I substitute baking soda for baking powder?",
    "What's a good vegetarian replacement for fish sauce?",
    "How do I keep fresh basil from wilting?",
    "Why did my bread come out dense?",
    "Give me a quick recipe for pancakes without eggs.",
    "What spices go well with roasted carrots?",
    "How do you make a roux?",
    "Is it safe to refreeze chicken that has thawed?",
    "Is stock the same thing as broth?",
    "How do I cook rice so it isn't sticky?",
    "What can I make with leftover mashed potatoes?",
    "Why do recipes tell you to salt the pasta water?",
    "What temperature should I roast a whole chicken at?",
    "Suggest a three-course dinner menu for a summer evening.",
    "How do I sharpen a kitchen knife on a whetstone?",
    "What's the trick to fluffy scrambled eggs?",
    "I have chickpeas, spinach and coconut milk. What can I cook?",
    "How can I tell when caramel is done?",
    "How long does homemade pesto keep in the fridge?",
    "What's a good side dish for grilled salmon?",
]

CREATIVE = [
    "Write a haiku about a rainy Monday.",
    "Compose a limerick about a forgetful astronaut.",
    "Write a short poem about a lighthouse keeper's cat.",
    "Write a four-line poem for my grandmother's 90th birthday.",
    "Draft an email to my landlord asking him to fix a leaking tap.",
    "Write a polite email declining a meeting invitation.",
    "Write an out-of-office reply for a two-week holiday.",
    "Come up with a slogan for a bike repair shop.",
    "Give me five name ideas for a bakery that specialises in sourdough.",
    "Suggest a catchy tagline for a reusable water bottle brand.",
    "Write a two-sentence spooky story set in a library.",
    "Write the opening line of a mystery novel.",
    "Write a one-minute toast for my best friend's wedding.",
    "Write a thank-you note to a teacher who is retiring.",
    "Write a product description for a handmade ceramic mug.",
    "Make up a bedtime story about a dragon who is afraid of the dark.",
    "Write a job posting for a part-time barista.",
    "Write a short chorus for a song about summer road trips.",
    "Write the opening paragraph of a cover letter for a junior data analyst role.",
    "Write a tweet announcing our café's new opening hours.",
    "Give me a riddle whose answer is 'a shadow'.",
    "Write a short dialogue between a pirate and a robot.",
    "Describe a sunset over the desert in three sentences.",
    "Write an apology text for missing a friend's party.",
    "Invent a new holiday and describe how people celebrate it.",
    "Write a lighthearted sonnet about coffee.",
    "Write a short welcome speech for new volunteers at an animal shelter.",
    ("My sister is turning thirty and loves hiking, terrible puns and her two border collies. Write a "
     "short, funny poem I can read out at her party, nothing longer than three verses, and please "
     "mention the dogs by name: Pip and Juniper."),
]

ADVICE = [
    "How can I fall asleep faster?",
    "Any tips for my first job interview?",
    "How do I ask my boss for a raise?",
    "What should I pack for a weekend camping trip?",
    "How do I stop procrastinating on my thesis?",
    "My houseplant's leaves are turning yellow. What am I doing wrong?",
    "How can I save money on groceries?",
    "What's the best way to learn a new language as an adult?",
    "How do I politely end a conversation that's dragging on?",
    "I'm nervous about public speaking. Any advice?",
    "How should I train for a half marathon in three months?",
    "How do I get my toddler to eat vegetables?",
    "Should I rent or buy a home? What factors matter most?",
    "How can I make friends after moving to a new city?",
    "How do I deal with a noisy upstairs neighbour?",
    "Any tips for working from home without feeling isolated?",
    "What should I look for when buying a used car?",
    "My cat keeps scratching the couch. What can I do?",
    "How do I start running if I've never exercised?",
    "What's a sensible monthly budget breakdown for a student?",
    "How do I survive a long-haul flight in economy?",
    "I keep forgetting people's names right after I meet them. How can I get better at this?",
    "How do I teach my dog to stop pulling on the leash?",
    ("I work night shifts three times a week as a nurse, and on my days off I can't get back to a "
     "normal sleep schedule. Blackout curtains helped a little. Is there a routine that makes "
     "switching between days and nights easier?"),
    ("My teenage son wants a part-time job, but his grades slipped last term. I don't want to say no "
     "outright. How can we agree on something that keeps school first but still lets him earn a bit?"),
]

EXPLAIN_FORMS = [
    "Explain {} like I'm five.",
    "Can you explain {} in simple terms?",
    "Give me an intuitive explanation of {}.",
    "Explain {} using an everyday analogy.",
    "How would you explain {} to a high school student?",
    "Break down {} for a complete beginner.",
    "I never really understood {}. Can you help?",
]
EXPLAIN_TOPICS = [
    "compound interest", "inflation", "how blockchains work", "special relativity", "supply and demand",
    "how neural networks learn", "the greenhouse effect", "how DNS works", "recursion",
    "how the stock market works", "quantum entanglement", "natural selection", "opportunity cost",
    "how credit scores are calculated", "public-key cryptography", "the water cycle", "how mortgages work",
    "plate tectonics", "entropy", "the placebo effect", "how GPS works", "cognitive dissonance",
    "what an API is", "the Doppler effect", "how containers differ from virtual machines",
]

PLANNING = [
    "Plan a three-day trip to Lisbon on a modest budget.",
    "Help me plan a week of healthy dinners.",
    "I have a free Saturday in Kyoto. What should I do?",
    "Create a six-week study schedule for learning calculus.",
    "Plan a surprise birthday party for ten people.",
    "What's a good itinerary for a road trip along the Pacific coast?",
    "Make me a beginner's weekly workout plan that needs no equipment.",
    "Help me plan a vegetable garden for a small balcony.",
    "What should I pack for a week in Iceland in October?",
    "Plan a kid-friendly day out in London.",
    "Outline a plan to read five classic novels this summer.",
    "Draft an agenda for a one-hour team retrospective.",
    "Plan a budget-friendly honeymoon somewhere warm in February.",
    "I'm moving flats next month. Give me a checklist.",
    "Help me plan a day hike near Denver.",
    "Design a morning routine that includes journaling and exercise.",
    "What's a good two-week itinerary for Vietnam?",
    ("We're four friends, two of whom don't drive, planning a long weekend somewhere within three "
     "hours of Manchester by train. We like food markets, easy walks and a bit of nightlife. Can you "
     "suggest two or three places and a rough plan for each?"),
]

CODE_QUESTIONS = [
    "How do I reverse a list in Python?",
    "What's the difference between a list and a tuple in Python?",
    "How can I read a CSV with pandas and skip the first two rows?",
    "Why does Python say 'IndentationError: unexpected indent'?",
    "How do I merge two dictionaries in Python 3?",
    "What does the yield keyword do in Python?",
    "python one-liner to count word frequencies in a file",
    "How do I sort a list of dicts by one key in Python?",
    "What's a Python decorator? Show a tiny example.",
    "Write a SQL query to find the second highest salary in an employees table.",
    "What's the difference between INNER JOIN and LEFT JOIN?",
    "How do I delete duplicate rows in PostgreSQL?",
    "SQL to count orders per customer in the last 30 days",
    "When should I add an index to a database column?",
    "Regex for a US ZIP code with an optional four-digit extension?",
    "What regex matches an email address reasonably well?",
    "How do I match words that start with a capital letter using regex?",
    "regex to pull all hashtags out of a string",
    "How do I find all files larger than 100 MB on Linux?",
    "Bash one-liner to rename every .jpeg file in a folder to .jpg",
    "How do I see which process is using port 8080?",
    "How do I count the lines in every .py file recursively?",
    "How do I undo the last git commit but keep my changes?",
    "What's the difference between git merge and git rebase?",
    "How do I deep copy an object in JavaScript?",
    "Why is 0.1 + 0.2 not equal to 0.3 in JavaScript?",
    "How do I center a div with CSS?",
    "What does a 404 mean compared with a 500 error?",
    "What usually causes a segmentation fault in C?",
    "How do I make an HTTP GET request in Go?",
    "Explain Big O notation with a simple example.",
    ("My Flask app works locally but returns a 502 error behind nginx on the server. The app logs show "
     "nothing, and gunicorn seems to be running. What should I check first, and in what order?"),
]

UNIT_CONVERSION = [
    "How many cups are in a litre?",
    "Convert 72 degrees Fahrenheit to Celsius.",
    "What is 5 feet 9 inches in centimetres?",
    "How many ounces are in 250 grams?",
    "10 km in miles?",
    "How many tablespoons make a quarter cup?",
    "Convert 3.5 hours to minutes.",
    "What's one acre in square metres?",
    "How many megabytes are in 2.5 gigabytes?",
    "Is 30 mph faster than 50 km/h?",
    "Convert 180 pounds to kilograms.",
    "How many seconds are there in a week?",
    "What is 0.75 inches in millimetres?",
    "How many litres does a 5-gallon bucket hold?",
]

WORD_PROBLEMS = [
    "A train leaves at 2:15 pm and travels 180 km at 60 km/h. When does it arrive?",
    "If three painters can paint a fence in 6 hours, how long would two painters take?",
    "Sam has twice as many marbles as Lee. Together they have 27. How many does Lee have?",
    "A shirt costs $40 and is 25% off. What's the sale price?",
    "I bake 3 batches of 14 cookies and give away 17. How many are left?",
    "A garden is 8 m by 5 m. What are its perimeter and area?",
    "If I save $150 a month, how long until I have $2,000?",
    "A recipe for 4 people needs 300 g of flour. How much do I need for 6 people?",
    ("Two cyclists start 60 km apart and ride toward each other at 12 and 18 km/h. "
     "How long until they meet?"),
    "A tank fills at 8 litres per minute but leaks 3 per minute. How long until it holds 200 litres?",
    ("Maria is 4 years older than her brother. In 6 years their ages will add up to 40. "
     "How old is Maria now?"),
    "Pens come in packs of 12 for $3.60. What does one pen cost?",
    "My car uses 6.5 L per 100 km. How much fuel does a 340 km trip need?",
    "A class of 28 students splits into groups of 5. How many full groups, and how many left over?",
]

ARITHMETIC = [
    "What is 17 times 23?",
    "What's 15% of 80?",
    "Is 391 a prime number?",
    "What's the square root of 196?",
    "Calculate 1234 + 5678 - 910.",
    "What is 2 to the power of 10?",
    "What's 3/8 as a decimal?",
    "Round 7.846 to one decimal place.",
    "What is the average of 12, 19, 23 and 30?",
]

DEFINITION_FORMS = [
    "What does '{}' mean?",
    "Define {}.",
    "What's the meaning of the word '{}'?",
    "{}: definition?",
    "What is the definition of {}?",
    "Can you define '{}' for me?",
]
DEFINITION_TERMS = [
    "serendipity", "ephemeral", "petrichor", "quorum", "hygge", "gerrymandering", "schadenfreude",
    "mnemonic", "fiduciary", "onomatopoeia", "amortization", "zeitgeist", "deductible", "isotope",
    "gentrification", "ubiquitous", "laconic", "filibuster",
]
DEFINITIONS = [
    "What does the idiom 'bite the bullet' mean?",
    "What does RSVP stand for?",
    "What does it mean when someone says 'break a leg'?",
    "Someone texted me 'FOMO'. What does that mean?",
]

COMPARISONS = [
    "How do I tell a crocodile from an alligator?",
    "Weather vs climate: what's the actual difference?",
    "When do I use 'affect' and when 'effect'?",
    "Should a freelancer set up an LLC or stay a sole proprietor?",
    "SSD or HDD for a laptop I use mostly for photo editing?",
    "Is an e-reader better than paper books for travelling?",
    "How is espresso different from drip coffee?",
    "Yoga or pilates for mild back pain?",
    "Roth IRA versus traditional IRA, in a nutshell?",
    "Why does HTTPS matter if plain HTTP works fine?",
    "How does a comet differ from an asteroid?",
    "Which is easier for an English speaker to learn, Spanish or Portuguese?",
    "Rental car or trains for two weeks in Italy?",
    "When should I use the median instead of the mean?",
    "How can you tell a violin from a viola?",
    "Python or JavaScript as a first programming language?",
    "Are LED bulbs really cheaper than incandescent ones over time?",
    "Hurricane, typhoon, cyclone: are they the same thing?",
    "Compare stocks and bonds in a few bullet points.",
    "Emigrate or immigrate: which one do I mean?",
    "Electric car or hybrid for a 90-minute daily commute?",
]

OPINIONS = [
    "What's your favourite season and why?",
    "Do you think remote work is here to stay?",
    "Is it better to read the book before watching the film?",
    "Which Beatles album is the best, in your opinion?",
    "Does pineapple belong on pizza?",
    "What do you think of four-day work weeks?",
    "Is it still worth learning to code these days?",
    "Cats or dogs?",
    "What's the most underrated invention of all time?",
    "Should primary school kids get homework?",
    "Is space exploration worth the money?",
    "If you could visit any city, which would it be?",
    "What makes a good teacher?",
    "Is it rude to recline your seat on a plane?",
    "What's the best way to spend a rainy Sunday?",
    "Mountains or beaches?",
    "Is handwriting still an important skill?",
    "What's one book everyone should read at least once?",
]

CHITCHAT = [
    "hello there",
    "Good morning!",
    "How are you today?",
    "what's up",
    "I'm so bored.",
    "Tell me a joke.",
    "thanks, that helped a lot",
    "Can we just chat for a bit?",
    "I had a really long day at work.",
    "What should I name my new goldfish?",
    "Are you a robot?",
    "I just finished my first marathon!",
    "lol that's hilarious",
    "Guess what I had for breakfast.",
    "Tell me a fun fact about penguins.",
    "I can't decide what to watch tonight.",
    "goodnight!",
    "It's my birthday today!",
    "I'm learning to play the ukulele.",
    "Never mind, I figured it out.",
    "What can you do?",
    "How was your weekend?",
    "brb, grabbing coffee",
    ("So today my neighbour's parrot learned to imitate my doorbell, and I've answered the door "
     "four times for nobody. I'm laughing about it now, but honestly, how do I get it to stop?"),
]

HOWTO = [
    "How do I get a red wine stain out of a carpet?",
    "How do I reset my router?",
    "How do you tie a bowline knot?",
    "How can I unclog a bathroom sink without chemicals?",
    "How do I change a flat tyre?",
    "How do I take a screenshot on a Mac?",
    "How do I remove rust from a cast-iron pan?",
    "How do you fold a fitted sheet?",
    "How do I back up the photos on my phone?",
    "How do I hang a heavy mirror on drywall?",
    "How do you jump-start a car?",
    "How do I format a bibliography in APA style?",
    "How do you repot a cactus without getting pricked?",
    "How can I make my home Wi-Fi faster?",
    "How do I set up two-factor authentication?",
    "How do I fold a paper aeroplane that flies far?",
    "How do I patch a small hole in a plaster wall?",
    "How do I start composting in an apartment?",
    "How do I file a claim for lost luggage?",
    "How do I merge cells in Excel?",
]

RECOMMENDATIONS = [
    "Recommend a sci-fi novel for someone who loved The Martian.",
    "What's a good film for a family night with young kids?",
    "Suggest some podcasts about history.",
    "Any two-player board games that take under 30 minutes?",
    "What are some hard-to-kill houseplants for beginners?",
    "Recommend a few albums to focus to while working.",
    "Which hiking boots are good for wide feet?",
    "What's a good first camera for getting into photography?",
    "Suggest a gift for a dad who likes fishing.",
    "Any anime recommendations for someone new to it?",
    "What's a good documentary about the ocean?",
    "Give me three classic novels that are short.",
    "Recommend a budget laptop for university.",
]

BRAINSTORM = [
    "Give me ten ideas for a middle-school science fair project.",
    "List some icebreaker questions for a team meeting.",
    "What are some cheap date ideas?",
    "Brainstorm names for a golden retriever puppy.",
    "Give me five blog post ideas about urban cycling.",
    "What are some unusual hobbies to try this year?",
    "List ways to reuse glass jars.",
    "Ideas for a 30th birthday that isn't a party?",
    "Suggest themes for a costume party.",
    "What are some fun things to do in a small town on a Sunday?",
    "Give me a few conversation starters for a networking event.",
    "What easy science experiments can I do at home with kids?",
    "Brainstorm fundraising ideas for a school library.",
    "What are fun indoor activities for a rainy day with children?",
]

# Bare inputs with no request in them: what a user might paste on its own.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "My grandmother used to keep chickens in her back garden.",
    "The meeting has been moved to Thursday at 3 pm.",
    "It rained all weekend, so we stayed in and did a jigsaw puzzle.",
    "Bananas are berries, but strawberries are not.",
    "The train to Glasgow is running twenty minutes late.",
    "She painted the fence blue, then changed her mind.",
    "Our neighbour's dog barks every time the post arrives.",
    "Honey never spoils if it is stored properly.",
    "Entry to the museum is free on the first Sunday of every month.",
    "Water boils at a lower temperature at high altitude.",
    "He ordered the soup, but they brought him a salad.",
    "Please remember to water the plants while I'm away.",
    "The violin was made in Cremona in the early 1700s.",
    "Tomorrow's forecast calls for light snow in the morning.",
    "The committee approved the budget after a long debate.",
    "Once upon a time, in a village by the sea, there lived a clockmaker.",
    ("The old mill at the end of the lane has been empty for years, but on summer evenings you can "
     "still hear the water turning the wheel, slow and steady, as if nobody ever told it to stop."),
]

PRODUCTS = [
    "Stainless steel French press, 1 litre",
    "Noise-cancelling over-ear headphones (black)",
    "Organic green tea, 50 bags",
    "USB-C to HDMI adapter, 4K 60 Hz",
    "Kids' waterproof rain jacket, age 6",
    "Ergonomic office chair with lumbar support",
    "12-inch pre-seasoned cast iron skillet",
    "Wireless charging pad",
    "Men's trail running shoes, size 10",
    "Bamboo chopping board set of 3",
    "LED desk lamp with dimmer",
    "Mechanical keyboard",
]

NUMBERS = [
    "42",
    "3.14159",
    "1,000,000",
    "-17",
    "2023-03-15",
    "0.0001",
    "+44 20 7946 0018",
    "12:45",
]

CODE_SNIPPETS = [
    "for i in range(10): print(i)",
    "SELECT name, email FROM users WHERE active = 1;",
    "def add(a, b):\n    return a + b",
    "const total = items.reduce((s, x) => s + x.price, 0);",
    'git commit -m "fix typo"',
    "ls -la | grep .txt",
    r"^\d{3}-\d{4}$",
    '<div class="header">Welcome</div>',
    "import numpy as np",
    "#include <stdio.h>",
    '{"name": "Alice", "age": 30}',
    "SyntaxError: invalid syntax",
    "Traceback (most recent call last):\n  File \"main.py\", line 3, in <module>\nKeyError: 'id'",
    "docker run -p 8080:80 nginx",
    "public static void main(String[] args)",
]

URLS = [
    "https://www.example.com/blog/2023/10/how-to-brew-tea",
    "www.example.org/about-us",
    "http://localhost:3000/api/v1/users?id=42",
    "ftp://files.example.net/pub/readme.txt",
    "example.com/shop/cart",
    "https://docs.example.com/en/latest/install.html#requirements",
    "mailto:info@example.com",
    "https://example.com/search?q=cheap+flights+to+rome",
    "192.168.0.1",
    "s3://my-bucket/data/2023/",
]

SOCIAL = [
    "just got my coffee and it's already cold #mondaymood",
    "Can't believe the game went to overtime!!! what a finish",
    "new blog post is up, link in bio",
    "anyone know a good plumber in the Leeds area?",
    "Day 3 of learning to juggle. Dropped everything. Still fun.",
    "reminder: clocks go forward this weekend",
    "the cat has claimed my keyboard again, no work today",
    "Hot take: cereal is a soup.",
    "Finally finished the 1000-piece puzzle. Only took three weeks.",
    "who else is staying up for the meteor shower tonight?",
    "Our team is hiring! DM me if you know a great frontend dev.",
    "That moment when you find cash in an old jacket",
    "Live music in the park this Saturday, bring a blanket",
    "If you find a grey umbrella on the 42 bus, it's mine",
]

FRAGMENTS = [
    "grocery list: eggs, oat milk, spinach, rice",
    "Chapter 7: The Return",
    "Meeting notes - Q3 planning",
    "Dear Sir or Madam,",
    "Table 2. Results by region",
    "Monday 9am dentist, 2pm call with Priya",
    "Ingredients: flour, sugar, butter, two eggs",
    "Flight XY 283, gate B12, boarding 17:40",
    "Re: invoice #4471",
    "Terms and Conditions",
    "Step 3: attach the left panel to the base",
    "Happy anniversary!",
    "Room 214, second floor, east wing",
    "P.S. don't forget the charger",
    "Version 2.3.1 release notes",
]

# ---------------------------------------------------------------------------- instructed
SUMMARY_FORMS = [
    "Summarize the following text in one sentence.",
    "Give a brief summary of this passage.",
    "TL;DR this for me.",
    "Summarize this in under fifteen words.",
    "What is the main point of this text?",
    "Summarize the key points as three bullets.",
]
PASSAGES = [
    ("The Riverside Beekeepers' Cooperative started with four hives on a rooftop. Today its members "
     "look after more than sixty colonies across the city, sell honey at two weekend markets and run "
     "free workshops for schools. Members say the hardest part is not the bees but finding rooftop "
     "owners who will say yes."),
    ("After months of debate, the town council voted to turn the car park behind the old post office "
     "into a small public square. Parking will move to a new lot near the station. Shop owners are "
     "split: some expect more foot traffic, others worry that elderly customers will struggle with "
     "the longer walk."),
    ("The umbrella has existed for thousands of years, but for most of that time it was used for "
     "shade rather than rain. Waterproofed versions became common in Europe in the 1700s. Early "
     "adopters in London were reportedly mocked in the street until the practicality of staying dry "
     "won people over."),
    ("Starting next Monday, the bakery on Elm Street will open at 6 am instead of 7 to serve "
     "commuters. To make up for the earlier start, it will close at 2 pm rather than 4. The owners "
     "say they tried the new hours for two weeks and sold out of morning pastries every day."),
    ("Every autumn, monarch butterflies from eastern North America fly thousands of kilometres to "
     "overwintering sites in the mountains of central Mexico. No single butterfly makes the round "
     "trip; the journey north in spring takes several generations. Scientists are still studying how "
     "the insects navigate so precisely."),
    ("Our school robotics club met twice a week this term and built a robot that sorts recycling by "
     "material. It came second at the regional competition. Next term we want to add a camera so it "
     "can read labels, but we will need new members who are comfortable with programming."),
    ("A repair café is a free meeting where volunteers help people fix broken household items, from "
     "toasters to torn jackets. The idea is to cut waste and share practical skills. Visitors are "
     "asked to stay and watch the repair, so that next time they might manage it themselves."),
    ("Light pollution has made the Milky Way invisible to many people who live in cities. Some towns "
     "now use shielded streetlights that point downward and switch to warmer colours after midnight. "
     "Astronomers say such changes cost little and can noticeably improve the night sky."),
    ("The Harbour Point lighthouse, switched off decades ago, has been restored by volunteers over "
     "six years. The lamp no longer guides ships, but the tower is open to visitors at weekends. A "
     "small exhibition inside tells the stories of the keepers who lived there with their families."),
    ("Plot holders in the community garden must keep paths clear, water only in the early morning or "
     "evening, and avoid chemical pesticides. Tools are shared and should go back to the shed clean. "
     "A plot left untended for more than a month may be given to the next person on the waiting list."),
    ("The new exhibition at the city museum brings together more than a hundred maps, from "
     "hand-drawn medieval charts to early satellite images. They are arranged to show how ideas of "
     "the world changed as travel and measurement improved. One highlight is a map that still shows "
     "California as an island."),
    ("Version 4.2 of the app adds an offline mode, so saved articles can be read without a "
     "connection. It also fixes a bug that reset the dark theme after updates and reduces battery use "
     "during long reading sessions. On older phones the first launch may take a little longer."),
    ("From next month, staff are expected in the office on Tuesdays and Thursdays, with the rest of "
     "the week flexible. Team leads may agree other arrangements where a role requires it. The "
     "company says the aim is to make in-person meetings easier to schedule, not to monitor "
     "attendance."),
    ("Sourdough bread relies on a starter, a mixture of flour and water that hosts wild yeast and "
     "bacteria. The bacteria produce acids that give the bread its tang, while the yeast makes it "
     "rise. Because the process is slow, a single loaf can take more than a day from start to finish."),
    ("On Saturday morning about eighty volunteers collected more than two hundred kilograms of litter "
     "from the north beach. Most of it was plastic bottles and fishing line. The organisers thanked a "
     "local café for the free coffee and said the next clean-up will be in early spring."),
    ("Table tennis began as an after-dinner parlour game in Victorian England, reportedly played with "
     "a row of books as the net. It spread quickly once celluloid balls were introduced. Today it is "
     "an Olympic sport, and top players hit the ball at remarkable speeds."),
    ("The library's new lending scheme lets members borrow tools as well as books. Drills, ladders, "
     "sewing machines and even a pressure washer can be borrowed for up to a week. Members must "
     "attend a short safety session before taking power tools home."),
    ("Matcha is a powdered green tea made from shade-grown leaves. Because the whole leaf is consumed "
     "rather than steeped, it tastes stronger and has more caffeine than ordinary green tea. "
     "Traditionally the powder is whisked with hot water using a bamboo whisk until it foams."),
]

READING_FORMS = [
    "Answer the question using only the passage.",
    "Read the text and answer the question.",
    "Based on the passage below, answer the question.",
    "Use the information given to answer.",
    "Answer briefly, quoting the text where you can.",
]
READING = [
    ("The Westbrook Folk Festival runs for three days each August. A single-day ticket costs £25 and "
     "a weekend pass costs £60. Children under twelve get in free with an adult.",
     "How much would two adults pay for weekend passes?"),
    ("Glaciers form where more snow falls in winter than melts in summer. Over many years the snow "
     "compresses into ice, which slowly flows downhill under its own weight.",
     "Why do glaciers move?"),
    ("Mira has three cats: Pepper, who is black; Socks, who is grey with white paws; and Biscuit, "
     "who is ginger and the youngest.",
     "Which cat is the youngest?"),
    ("The gallery is open Tuesday to Sunday from 10 am to 5 pm, and until 9 pm on Thursdays. It is "
     "closed on Mondays except public holidays.",
     "Can I visit at 7 pm on a Thursday?"),
    ("Items can be returned within 30 days of delivery if they are unused and in their original "
     "packaging. Sale items can be exchanged but not refunded.",
     "Can I get my money back for a sale item?"),
    ("The recipe calls for 200 g of rolled oats, two ripe bananas, a handful of walnuts and a "
     "teaspoon of cinnamon. Bake at 180 °C for 25 minutes.",
     "Which nut does the recipe use?"),
    ("The committee has Dr. Okafor as chair, Ms. Lindqvist as treasurer and Mr. Alvarez as "
     "secretary. It meets on the first Wednesday of each month.",
     "Who looks after the committee's money?"),
    ("Although the bridge was designed in 1932, construction was held up by funding problems and it "
     "did not open until 1951.",
     "How many years passed between the design and the opening?"),
    ("Sea otters often float on their backs while they eat, using their chests as a table. They "
     "sometimes hold paws while sleeping so they don't drift apart.",
     "Why do sea otters hold paws?"),
    ("To reset the thermostat, hold the mode button for five seconds until the screen flashes, then "
     "press the up arrow twice.",
     "What should you do after the screen flashes?"),
    ("The first train leaves the central station at 5:40 am, and trains run every 20 minutes until "
     "midnight. On Sundays the first train leaves at 7:00 am.",
     "When is the first train on a Sunday?"),
    ("Kiran wanted to learn the cello, but his flat was small, so he started with a ukulele and "
     "practised on the balcony every evening.",
     "Which instrument did Kiran actually start with?"),
    ("Mangroves grow in salty coastal water where most trees cannot survive. Their tangled roots "
     "protect shorelines from erosion and shelter young fish.",
     "Name one way mangroves help the coast."),
    ("The pottery workshop is limited to twelve people. Registration closes on Friday, and all "
     "materials are included in the fee.",
     "Do I need to bring my own clay?"),
    ("In the first round, Team Blue scored 14 points and Team Red scored 9. In the second round, Red "
     "scored 12 and Blue only 4.",
     "Which team was ahead after two rounds?"),
    ("The orchard grows three kinds of apple. The early variety is picked in August, the crisp green "
     "one in September and the late red one in October.",
     "When is the green variety picked?"),
]

REWRITE = [
    ("Rewrite this sentence to sound more formal.", "hey, we can't make it to the meeting tomorrow, sorry"),
    ("Make this sound more professional.", "The report's gonna be late cause Sam's off sick."),
    ("Make this more casual and friendly.", "Please be advised that the office will be closed on Monday."),
    ("Rephrase this in a warmer tone.", "Your request has been denied due to missing documents."),
    ("Simplify this sentence for a young reader.",
     "Precipitation is anticipated to intensify throughout the afternoon."),
    ("Explain this in plain language.",
     "The tenant shall indemnify the landlord against all claims arising from the tenant's use of the premises."),
    ("Shorten this to under ten words.",
     "I just wanted to let you know that I will probably be running a little bit late this morning."),
    ("Make this sentence more concise.",
     "In my personal opinion, I think that we should probably consider the option of postponing the trip."),
    ("Rewrite in the passive voice.", "The committee rejected the proposal after a short discussion."),
    ("Change this to the active voice.", "The cake was eaten by the children before the guests arrived."),
    ("Paraphrase the following.", "The early bird catches the worm, but the second mouse gets the cheese."),
    ("Paraphrase this without changing its meaning.", "Our flight was delayed because of fog over the airport."),
    ("Make this sound more enthusiastic.", "The new playground is open."),
    ("Rewrite this as a question.", "The shop closes at nine tonight."),
    ("Put this sentence in the past tense.", "She walks to the market and buys fresh figs."),
    ("Rewrite this in the future tense.", "We planted sunflowers along the fence."),
    ("Turn this into a polite request.", "Send me the invoice."),
    ("Rewrite this complaint so it sounds constructive.", "Your website is useless, I can never find anything."),
    ("Make this product description more vivid.", "This is a blue scarf made of wool."),
    ("Rewrite this from the first person to the third person.",
     "I forgot my keys, so I waited on the steps for an hour."),
    ("Expand this into a full paragraph.",
     "Reasons to visit the coast in winter: quiet beaches, storms, cheap hotels."),
    ("Rewrite this headline to be less sensational.", "You Won't BELIEVE What This Town Did With Its Old Library!"),
    ("Make this sentence gender-neutral.", "Each employee should bring his badge to the front desk."),
    ("Rewrite this in British English.",
     "I parked the truck near the elevator in the apartment building's parking lot."),
    ("Rewrite this sentence without any adjectives.", "The tired old dog slept on the warm wooden porch."),
    ("Combine these into one sentence.", "The concert was sold out. We watched the livestream at home."),
]

GRAMMAR = [
    ("Fix the grammar in this sentence.", "Me and him goes to the park every sunday."),
    ("Correct the grammar.", "There is many reasons why the project was late."),
    ("Correct the spelling mistakes.", "I recieved the pakage yesterday but the adress was wrong."),
    ("Fix any typos in this.", "Definately bring an umbrela, the forcast says rain."),
    ("Fix the punctuation.", "lets eat grandma said the little boy"),
    ("Add the missing punctuation.", "However I disagree the data is clear and it says otherwise"),
    ("Proofread the following.", "Their going too the concert on friday, and there car is all ready packed."),
    ("Proofread this paragraph.",
     "The comittee have decided to postpone the meeting untill further notice, we apologise for any "
     "inconvenience this may cause to you."),
    ("Is this sentence grammatically correct?", "Whom should I say is calling?"),
    ("Is this grammatical? If not, fix it.", "Neither the teacher nor the students was ready for the fire drill."),
    ("Correct the errors in this text.", "She don't like coffee but she drink tea every mornings."),
    ("Find and fix the mistakes.", "Its been three year since we last seen each other."),
    ("Should it be 'fewer' or 'less' here?", "There were less people at the match than last year."),
    ("Fix the capitalization.", "last summer we visited paris and saw the eiffel tower with aunt maria."),
    ("Fix the verb tenses.", "Yesterday I go to the shop and buy some apples."),
    ("Edit this for clarity.", "The manager told the assistant that he needed to finish the report before he left."),
    ("Fix this run-on sentence.", "I finished the book it was better than I expected I'm going to read the sequel."),
    ("Correct the subject-verb agreement.", "The list of items are on the table."),
    "Is it 'between you and I' or 'between you and me'?",
    "Is 'alot' a real word?",
    "When do I use a semicolon instead of a comma?",
]

TRANSLATE_FORMS = [
    "Translate the following into {tgt}.",
    "Translate this from {src} to {tgt}.",
    "How would you say this in {tgt}?",
    "Give me the {tgt} translation.",
    "Translate into {tgt}, keeping it informal.",
    "Render this sentence in natural {tgt}.",
    "Translate to {tgt}:",
]
TRANSLATE = [  # (text, source language, target language)
    ("Where is the nearest pharmacy?", "English", "Spanish"),
    ("The meeting has been postponed until next week.", "English", "German"),
    ("Could you recommend a good local restaurant?", "English", "Italian"),
    ("I would like a window seat, please.", "English", "Japanese"),
    ("Happy birthday! I hope all your wishes come true.", "English", "Portuguese"),
    ("Please switch off your phones during the performance.", "English", "French"),
    ("How much does this cost?", "English", "Korean"),
    ("We look forward to working with you.", "English", "Dutch"),
    ("My suitcase did not arrive.", "English", "Polish"),
    ("Thank you for your hospitality.", "English", "Turkish"),
    ("Is breakfast included?", "English", "Mandarin Chinese"),
    ("Don't forget to bring your passport.", "English", "Hindi"),
    ("¿Dónde está la estación de tren?", "Spanish", "English"),
    ("Je voudrais réserver une table pour deux personnes.", "French", "English"),
    ("Wie spät ist es?", "German", "English"),
    ("Dove si trova la biblioteca?", "Italian", "English"),
    ("Obrigado pela ajuda de ontem.", "Portuguese", "English"),
    ("Ik fiets elke dag naar mijn werk.", "Dutch", "English"),
    ("Ich habe meinen Schlüssel verloren.", "German", "French"),
    ("Il fait très beau aujourd'hui.", "French", "Spanish"),
    ("La cena está lista.", "Spanish", "Italian"),
]
TRANSLATE_BARE = [
    "How do you say 'good luck' in Greek?",
    "What's the French word for squirrel?",
    "translate 'see you tomorrow' into German",
    "What does 'carpe diem' mean in English?",
    "How would I say 'I'm allergic to peanuts' in Thai?",
    "Is 'bonjour' used in the evening too?",
]

CLASSIFY = [
    ("Which of these is a mammal?", "salmon, bat, frog, pelican"),
    ("Which of these animals is a reptile?", "newt, iguana, otter, sparrow"),
    ("Classify each item as a fruit or a vegetable.", "tomato, carrot, plum, celery, kiwi"),
    ("Which word does not belong?", "violin, cello, trumpet, harp"),
    ("Is this a question, a command or a statement?", "Close the window before you leave."),
    ("Label the genre of this book blurb: mystery, romance, fantasy or science fiction.",
     "When the last starship leaves Earth, a stowaway engineer discovers the ship's AI has plans of its own."),
    ("Tag this customer message as billing, shipping or technical support.",
     "My package says delivered but it isn't on my porch."),
    ("Which of these are renewable energy sources?", "coal, wind, solar, natural gas, geothermal"),
    ("Sort these instruments into strings, woodwinds and percussion.",
     "oboe, marimba, double bass, clarinet, snare drum"),
    ("Which of these cities are in South America?", "Lima, Lagos, Quito, Lyon, Montevideo"),
    ("Is this email spam or not spam?",
     "Congratulations! You have been selected for an exclusive prize. Click here within 24 hours to claim it."),
    ("Which of these is a noble gas?", "nitrogen, argon, chlorine, sodium"),
    ("Is the register of this message formal or informal?", "hey, can u send me the slides from earlier? thx"),
    ("Which of these is not a programming language?", "Rust, Kotlin, Haskell, Photoshop"),
    ("Solid, liquid or gas at room temperature?", "mercury, oxygen, iron, ethanol"),
    ("Which of these birds cannot fly?", "emu, finch, kiwi, osprey, penguin"),
    ("Is the following a fact or an opinion?", "Jazz is the most sophisticated kind of music."),
    ("Sort these expenses into needs and wants.", "rent, concert tickets, groceries, streaming subscription, bus pass"),
    ("Which are herbs and which are spices?", "basil, cumin, thyme, cinnamon, dill"),
    ("What part of speech is the word in capitals?", "She ran QUICKLY to the door."),
    ("Which continent is each country in?", "Peru, Kenya, Mongolia, Portugal"),
    ("Group these by colour.", "banana, lime, lemon, cucumber, sunflower"),
]

EXTRACT = [
    ("List the verbs in the following sentence.",
     "The chef chopped the onions, stirred the sauce and tasted it twice."),
    ("List the verbs in this sentence.", "We hiked, swam and slept under the stars."),
    ("Which words here are verbs?", "Grandpa whistles while he repairs old clocks."),
    ("Extract all the dates mentioned.",
     "The lease starts on 1 June and the first inspection is due by 15 September."),
    ("Pull out every date in this text.", "Submissions open March 3 and close April 21; winners are announced May 30."),
    ("Find the names of all people mentioned.", "After the talk, Dr. Chen and Rosa Mendes joined Tom for dinner."),
    ("Who is mentioned in this sentence?", "The award went to Amara Diallo, with Felix Braun as runner-up."),
    ("Extract the email address and phone number.",
     "For bookings, write to events@example.org or call 555-0142 before noon."),
    ("List every city mentioned.", "Our tour starts in Porto, stops in Salamanca and Toledo, and ends in Valencia."),
    ("Which cities are named here?", "She grew up in Winnipeg but has lived in Osaka and Nairobi since."),
    ("What are the adjectives in this sentence?", "The narrow, cobbled street led to a bright little square."),
    ("List the adjectives.", "A cold, damp wind blew across the empty field."),
    ("Extract the ingredients.", "Whisk two eggs with milk and a pinch of nutmeg, then pour over stale bread."),
    ("What ingredients does this step use?",
     "Fry the garlic in olive oil, add chopped tomatoes and finish with fresh basil."),
    ("Which numbers appear in this text?", "The hall has 250 seats, 12 of them accessible, and tickets cost 18 euros."),
    ("List the nouns in this sentence.", "The gardener left his gloves and a trowel beside the greenhouse."),
    ("Extract the product name and price.", "Just in: the TrailLite 2 tent, now only $149 for members."),
    ("Pull out the key facts as a list.", "The ferry leaves at 8:30, takes 45 minutes and costs 12 dollars one way."),
    ("Extract the company names.", "Northwind Traders signed a deal with Contoso and Fabrikam last quarter."),
    ("Find all the hashtags.", "Loving this weather #sunny #weekend, heading to the lake #summer"),
    ("Extract the URL from this message.",
     "The agenda is posted at https://example.com/agenda, please read it before Friday."),
]

SENTIMENT = [
    ("Is this review positive or negative?",
     "The tent kept us dry through two nights of storms, but the zip broke on day three."),
    ("What is the sentiment of this post?", "Train cancelled again. Third time this week."),
    ("Rate the sentiment from 1 (very negative) to 5 (very positive).",
     "The soup was lukewarm but the staff were lovely."),
    ("Does the customer sound happy?", "I've used this blender every morning for a year and it still works like new."),
    ("Positive, negative or neutral?", "The package arrived on Tuesday."),
    ("How does the writer feel about the museum?", "We spent four hours there and still didn't want to leave."),
    ("Which emotion is this: joy, anger, sadness or fear?",
     "I can't believe they cancelled the concert an hour before it started."),
    ("Is this comment sarcastic?", "Oh great, another meeting that could have been an email."),
    ("Is the speaker optimistic or pessimistic about the project?",
     "We've hit a few snags, but I think we'll still launch on time."),
    "Would you call this review mostly positive? 'Comfy seats, terrible legroom, friendly crew.'",
]

STRING_MANIPULATION = [
    "Spell 'rhythm' backwards.",
    ("Reverse the order of the words.", "the garden gate was open"),
    "How many letters are in 'Mississippi'?",
    ("Convert to title case.", "a tale of two gardens and a missing trowel"),
    ("Count the vowels in this word.", "education"),
    ("Make an acronym from this phrase.", "portable network graphics"),
    ("Write this in snake_case.", "Total Monthly Revenue"),
    "Is 'racecar' a palindrome?",
]

CODE_TASKS = [
    ("Explain what this code does.", "print(sum(x for x in range(100) if x % 3 == 0))"),
    ("Find the bug in this function.", "def average(nums):\n    return sum(nums) / len(nums) + 1"),
    ("Convert this Python to JavaScript.", "names = [n.upper() for n in names if n]"),
    ("Add type hints to this function.", "def greet(name, times):\n    return ', '.join(['hi ' + name] * times)"),
    ("Write a docstring for this function.", "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))"),
    ("What does this regex match?", r"^[A-Z]{2}\d{4}$"),
    ("Explain this shell command.", "find . -name '*.log' -mtime +7 -delete"),
    ("Make this SQL query faster.", "SELECT * FROM orders WHERE YEAR(created_at) = 2023;"),
    ("What will this print?", "x = [1, 2, 3]\ny = x\ny.append(4)\nprint(x)"),
    ("Rewrite this loop as a list comprehension.",
     "result = []\nfor w in words:\n    if len(w) > 3:\n        result.append(w.lower())"),
    ("Why does this raise an error?", "d = {'a': 1}\nprint(d['b'])"),
    ("Describe this query in plain English.",
     "SELECT city, COUNT(*) FROM customers GROUP BY city HAVING COUNT(*) > 10;"),
    ("Write unit tests for this function.",
     "def is_leap(y):\n    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)"),
    ("Simplify this code.", "if a == True:\n    return True\nelse:\n    return False"),
    ("What is the time complexity of this?", "for i in range(n):\n    for j in range(i):\n        total += j"),
    ("Convert this JSON to YAML.", '{"server": {"port": 8080, "debug": false}}'),
    ("What does this git command do?", "git rebase -i HEAD~3"),
    ("Fix the syntax error.", "for item in items\n    print(item)"),
    ("Add error handling to this code.", "with open(path) as f:\n    data = json.load(f)"),
    ("What does this CSS do?", ".card { display: flex; gap: 1rem; align-items: center; }"),
]

TITLES = [
    ("Suggest a title for this blog post.",
     "Things I learned from growing tomatoes on a north-facing balcony for three summers."),
    ("Write a headline for this news item.",
     "The town's only cinema will reopen next month after a two-year renovation funded by local residents."),
    ("Give three hashtags for this post.", "Sunrise hike up the ridge this morning, totally worth the 5 am alarm."),
    ("Come up with a catchy name for this app.",
     "An app that reminds you to water your plants based on the weather forecast."),
    ("Write a subject line for this email.",
     "Hi all, the kitchen will be closed Friday for cleaning, so please take your food out of the "
     "fridge by Thursday evening."),
    ("Suggest a name for this podcast.", "Two retired teachers talk about forgotten inventions every week."),
    ("Give this recipe a fun name.", "A spicy black bean soup topped with lime crema and crushed tortilla chips."),
    ("Write a one-line caption for this photo.", "A golden retriever asleep on a pile of autumn leaves."),
    ("Propose a title for this short story.",
     "A retired mapmaker receives a letter addressed to a town that was never built."),
    ("Write a tagline for this event.", "A Saturday night market with local food, live jazz and handmade crafts."),
    ("Suggest a chapter title.",
     "The crew finally reaches the island, only to find that someone has already planted a flag."),
    ("Name this quiz team.", "Five coworkers entering a charity pub quiz, all of whom love astronomy."),
    ("Turn this into a short, punchy headline.",
     "A new study suggests some jumping spiders may show sleep states that resemble dreaming."),
    ("Pick five keywords for this abstract.",
     "We surveyed soil microbes in twelve urban parks and found that older parks hosted more varied "
     "communities, especially under large trees."),
]

FORMATTING = [
    ("Convert this to JSON.", "name: Priya, role: designer, start: March"),
    ("Turn these notes into a bulleted list.",
     "buy stamps then call the vet and also book the car service for next week"),
    ("Sort these words alphabetically.", "maple, cedar, birch, alder, oak"),
    ("Make a markdown table from this data.", "apples 3 kg 4.50; pears 2 kg 3.80; plums 1 kg 2.90"),
    ("Format this address properly.", "221 baker st apt 4 springfield il 62704"),
    ("Convert this CSV row into a Python dict.", "id,name,score\n7,Marta,88"),
    ("Put these steps in the right order.", "rinse, lather, wet hair, dry off"),
    ("Rewrite these times in 24-hour format.", "7:15 am, 12:30 pm, 11:45 pm"),
    ("Format these dates as YYYY-MM-DD.", "March 3rd 2021, 14/07/2019, Dec 1 2022"),
    ("Turn this into a numbered checklist.",
     "Before leaving, turn off the stove, lock the back door, water the ferns and leave a key with Jo."),
    ("Make a pros and cons list from this.",
     "Living downtown means short commutes and lots of restaurants, but rent is high and it's noisy at night."),
    ("Write this phone number in international format.", "020 7946 0123, UK"),
    ("Convert this recipe to metric.", "2 cups flour, 1 stick butter, 1/2 cup sugar"),
    ("Fill in the template 'Dear [name], your order [number] has shipped.'", "name: Tomas, number: 5521"),
    ("Create a YAML config from this description.", "a web server on port 8000 with debug logging and two workers"),
    ("Split this into separate sentences.", "we arrived late the hotel had lost our booking luckily they found a room"),
]

MATH = [
    ("Solve for x.", "3x + 7 = 22"),
    ("Simplify the expression.", "(2a^2 b)(3a b^3)"),
    ("Find the derivative.", "f(x) = x^3 - 4x + 1"),
    ("What is the probability?", "Two fair dice are rolled. What is the chance the sum is 7?"),
    ("Factor this polynomial.", "x^2 - 5x + 6"),
    ("True or false?", "The angles of any triangle add up to 180 degrees."),
    ("Compute the mean and the median.", "4, 8, 15, 16, 23, 42"),
    ("Write this in scientific notation.", "0.000482"),
]

ANSWER_FORMS = [
    "Answer the question briefly.",
    "Answer in one word.",
    "Respond in a single sentence.",
    "Answer as if you were a pirate.",
    "Give a short answer and a one-line explanation.",
    "Answer the following question.",
    "Answer in the style of a sports commentator.",
    "Keep your answer under 20 words.",
    "Explain your reasoning step by step.",
]
QUESTIONS = [
    "What is the tallest animal on land?",
    "Which planet has the most moons?",
    "Who painted The Starry Night?",
    "What gas do plants take in from the air?",
    "What is the main ingredient in hummus?",
    "How many strings does a standard guitar have?",
    "Which metal is liquid at room temperature?",
    "What is the largest organ of the human body?",
    "Where did the game of chess originate?",
    "What does a barometer measure?",
    "Why do we have leap years?",
    "What is the currency of Japan?",
    "Who wrote Pride and Prejudice?",
    "What is the freezing point of water in Fahrenheit?",
    "Which ocean is the largest?",
    "What is a group of crows called?",
    "Which instrument has 88 keys?",
    "What colour do you get by mixing blue and yellow?",
    "How many hearts does an octopus have?",
]

ROLEPLAY = [
    ("You are a friendly librarian.", "Can you suggest something like The Hobbit for my nephew?"),
    ("You are a strict but fair chess coach.", "I keep losing my queen early. What am I doing wrong?"),
    ("Act as a tour guide in Rome.", "What should I see near the Pantheon?"),
    ("You are a support agent for an internet provider.", "My connection drops every evening around 8."),
    ("Pretend you are a medieval knight.", "What do you make of smartphones?"),
    ("You are interviewing me for a software engineering job.", "I'm ready for the first question."),
    ("You are a patient maths tutor.", "I don't get why dividing by a fraction flips it."),
    ("Act as a personal trainer.", "I have twenty minutes and a pair of dumbbells."),
    ("You are a gardening expert.", "Can I grow lemons indoors in a cold climate?"),
    ("Reply like a Shakespearean actor.", "Tell me about your morning commute."),
]

# Lead-ins and sign-offs people wrap around questions; each is dealt a few times only.
LEADS = ["Quick question: ", "Hi! ", "Hello. ", "Hey there! ", "Random question. ", "Sorry if this is basic. ",
         "Help me out here. ", "Okay, next one. "]
TRIVIA_LEADS = ["For a pub quiz: ", "My kid asked me this. ", "Settle a debate: ", "I've always wondered this. "]
TAILS = [" Thanks!", " Thanks in advance.", " Please keep it short.", " Just curious.", " A short answer is fine.",
         " Cheers.", " (No rush.)", " A few sentences is plenty."]
FILLER_USES = 3
FILLER_RATE = 0.22
CASUAL_RATE = 0.08  # lower-cased, no final punctuation, as typed in a hurry

TRIVIA = {"history", "science", "geography", "sports"}
QUESTION_LIKE = TRIVIA | {"cooking", "advice", "howto", "code_question", "recommendation", "comparison",
                          "opinion", "planning"}

# Category -> group, in the order the stats list them.
GROUPS = {
    "history": "knowledge", "science": "knowledge", "geography": "knowledge", "sports": "knowledge",
    "cooking": "knowledge", "definition": "knowledge", "explain": "knowledge", "comparison": "knowledge",
    "answer_question": "knowledge", "reading_comprehension": "knowledge",
    "creative_writing": "requests", "advice": "requests", "howto": "requests", "planning": "requests",
    "recommendation": "requests", "brainstorm": "requests", "roleplay": "requests",
    "code_question": "code", "code_task": "code",
    "unit_conversion": "math", "word_problem": "math", "arithmetic": "math", "math": "math",
    "summarize": "language", "rewrite": "language", "grammar": "language", "translation": "language",
    "classification": "language", "extraction": "language", "titles": "language", "formatting": "language",
    "sentiment": "language", "string_manipulation": "language",
    "opinion": "chat", "chitchat": "chat",
    "bare_sentence": "bare input", "bare_product": "bare input", "bare_number": "bare input",
    "bare_code": "bare input", "bare_url": "bare input", "bare_social": "bare input", "bare_fragment": "bare input",
}


# ============================================================================ build

def _entries(category: str, entries: list) -> list[Query]:
    out = []
    for e in entries:
        if isinstance(e, str):
            out.append(Query(category, e))
        else:
            instruction, text = e
            out.append(Query(category, text, instruction, template=instruction))
    return out


def _deal(rng: random.Random, forms: list[str], n: int) -> list[str]:
    """``n`` forms, each used as evenly as the count allows, in seeded order."""
    dealt: list[str] = []
    while len(dealt) < n:
        batch = list(forms)
        rng.shuffle(batch)
        dealt += batch
    return dealt[:n]


def _slotted(rng: random.Random, category: str, forms: list[str], fillers: list[str]) -> list[Query]:
    return [Query(category, form.format(f), template=form) for form, f in zip(_deal(rng, forms, len(fillers)), fillers)]


def _instructed(rng: random.Random, category: str, forms: list[str], inputs: list[str]) -> list[Query]:
    return [Query(category, text, form, template=form) for form, text in zip(_deal(rng, forms, len(inputs)), inputs)]


def _reading(rng: random.Random) -> list[Query]:
    layouts = ["{p}\n\nQuestion: {q}", "Text: {p}\nQ: {q}", "{p}\n\n{q}"]
    out = []
    for form, layout, (passage, question) in zip(_deal(rng, READING_FORMS, len(READING)),
                                                 _deal(rng, layouts, len(READING)), READING):
        out.append(Query("reading_comprehension", layout.format(p=passage, q=question), form, template=form))
    return out


def _translations(rng: random.Random) -> list[Query]:
    out = []
    for form, (text, src, tgt) in zip(_deal(rng, TRANSLATE_FORMS, len(TRANSLATE)), TRANSLATE):
        out.append(Query("translation", text, form.format(src=src, tgt=tgt), template=form))
    return out + _entries("translation", TRANSLATE_BARE)


def _dress(queries: list[Query], rng: random.Random) -> list[Query]:
    """Wrap some bare questions in a lead-in or sign-off, or type them casually, so the pool is not all
    tidy textbook phrasing."""
    general = _deal(rng, LEADS + TAILS, FILLER_USES * len(LEADS + TAILS))
    trivia = _deal(rng, TRIVIA_LEADS, FILLER_USES * len(TRIVIA_LEADS))
    out = []
    for q in queries:
        if q.instruction is not None or q.category not in QUESTION_LIKE:
            out.append(q)
            continue
        r = rng.random()
        deck = trivia if q.category in TRIVIA and trivia and rng.random() < 0.5 else general
        if r < FILLER_RATE and deck:
            filler = deck.pop()
            if filler in TAILS and not q.input.endswith(("?", ".", "!")):
                deck.insert(0, filler)  # a sign-off after an unpunctuated line reads as one run-on sentence
                out.append(q)
                continue
            text = filler + q.input if filler in LEADS + TRIVIA_LEADS else q.input + filler
            out.append(replace(q, input=text, template=filler))
        elif r < FILLER_RATE + CASUAL_RATE and q.category != "code_question" and len(q.input.split()) <= 9:
            out.append(replace(q, input=q.input.lower().rstrip("?.!")))
        else:
            out.append(q)
    return out


def build(seed: str = SEED) -> list[Query]:
    """The pool, in its committed order. Raises ``ValueError`` if it breaks a composition rule."""
    rng = random.Random(seed)
    queries = [
        *_entries("history", HISTORY), *_entries("science", SCIENCE), *_entries("geography", GEOGRAPHY),
        *_entries("sports", SPORTS), *_entries("cooking", COOKING), *_entries("creative_writing", CREATIVE),
        *_entries("advice", ADVICE), *_slotted(rng, "explain", EXPLAIN_FORMS, EXPLAIN_TOPICS),
        *_entries("planning", PLANNING), *_entries("code_question", CODE_QUESTIONS),
        *_entries("unit_conversion", UNIT_CONVERSION), *_entries("word_problem", WORD_PROBLEMS),
        *_entries("arithmetic", ARITHMETIC),
        *_slotted(rng, "definition", DEFINITION_FORMS, DEFINITION_TERMS), *_entries("definition", DEFINITIONS),
        *_entries("comparison", COMPARISONS), *_entries("opinion", OPINIONS), *_entries("chitchat", CHITCHAT),
        *_entries("howto", HOWTO), *_entries("recommendation", RECOMMENDATIONS),
        *_entries("brainstorm", BRAINSTORM), *_entries("bare_sentence", SENTENCES),
        *_entries("bare_product", PRODUCTS), *_entries("bare_number", NUMBERS),
        *_entries("bare_code", CODE_SNIPPETS), *_entries("bare_url", URLS), *_entries("bare_social", SOCIAL),
        *_entries("bare_fragment", FRAGMENTS),
        *_instructed(rng, "summarize", SUMMARY_FORMS, PASSAGES), *_reading(rng),
        *_entries("rewrite", REWRITE), *_entries("grammar", GRAMMAR), *_translations(rng),
        *_entries("classification", CLASSIFY), *_entries("extraction", EXTRACT),
        *_entries("sentiment", SENTIMENT), *_entries("string_manipulation", STRING_MANIPULATION),
        *_entries("code_task", CODE_TASKS), *_entries("titles", TITLES), *_entries("formatting", FORMATTING),
        *_entries("math", MATH), *_instructed(rng, "answer_question", ANSWER_FORMS, QUESTIONS),
        *_entries("roleplay", ROLEPLAY),
    ]
    queries = _dress(queries, rng)
    rng.shuffle(queries)
    validate(queries)
    return queries


# ============================================================================ rules

def _words(q: Query) -> int:
    return len(((q.instruction or "") + " " + q.input).split())


def _tokens(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def near_duplicates(queries: list[Query], threshold: float = NEAR_DUPLICATE) -> list[tuple[float, str, str]]:
    """Pairs of inputs (of five or more distinct words) whose word sets overlap by ``threshold`` or more.

    Two fills of one slot template are alike by design; MAX_TEMPLATE_USES bounds those instead.
    """
    toks = [(_tokens(q.input), q) for q in queries]
    toks = [t for t in toks if len(t[0]) >= 5]
    out = []
    for i, (a, qa) in enumerate(toks):
        for b, qb in toks[i + 1:]:
            j = len(a & b) / len(a | b)
            if j >= threshold and not (qa.template and qa.template == qb.template):
                out.append((j, qa.input, qb.input))
    return sorted(out, reverse=True)


def validate(queries: list[Query]) -> None:
    problems = []
    n = len(queries)
    if not SIZE[0] <= n <= SIZE[1]:
        problems.append(f"{n} queries, want {SIZE[0]}-{SIZE[1]}")
    unknown = {q.category for q in queries} - GROUPS.keys()
    if unknown:
        problems.append(f"categories without a group: {sorted(unknown)}")
    seen: dict[str, str] = {}
    for q in queries:
        key = " ".join(q.input.lower().split()).rstrip("?.!")
        if key in seen:
            problems.append(f"duplicate input: {q.input!r}")
        seen[key] = q.input
        text = (q.instruction or "") + q.input
        if "<<" in text or not q.input.strip():
            problems.append(f"empty or indicator-like query: {q.input!r}")
    share = sum(q.instruction is not None for q in queries) / max(n, 1)
    if not INSTRUCTED_SHARE[0] <= share <= INSTRUCTED_SHARE[1]:
        problems.append(f"instructed share {share:.2f}, want {INSTRUCTED_SHARE[0]}-{INSTRUCTED_SHARE[1]}")
    for cat, count in Counter(q.category for q in queries).items():
        cap = NARROW.get(cat, CATEGORY_CAP)
        if count > cap * n:
            problems.append(f"{cat}: {count} queries, over {cap:.0%} of the pool")
    for template, count in Counter(q.template for q in queries if q.template).items():
        if count > MAX_TEMPLATE_USES:
            problems.append(f"template used {count} times: {template!r}")
    for j, a, b in near_duplicates(queries):
        problems.append(f"near-duplicates ({j:.2f}): {a!r} / {b!r}")
    if problems:
        raise ValueError("general-negatives pool breaks its rules:\n  " + "\n  ".join(problems))


# ============================================================================ output

def render(queries: list[Query]) -> str:
    return "".join(json.dumps({"instruction": q.instruction, "input": q.input}, ensure_ascii=False) + "\n"
                   for q in queries)


def stats(queries: list[Query]) -> str:
    """The composition as a markdown table plus summary lines (the README quotes it)."""
    n = len(queries)
    by_cat = Counter(q.category for q in queries)
    instructed = Counter(q.category for q in queries if q.instruction is not None)
    group_order = list(dict.fromkeys(GROUPS.values()))
    rows = sorted(by_cat, key=lambda c: (group_order.index(GROUPS[c]), -by_cat[c], c))
    lines = ["| group | category | queries | with instruction | share |", "|---|---|---:|---:|---:|"]
    for c in rows:
        lines.append(f"| {GROUPS[c]} | {c} | {by_cat[c]} | {instructed[c]} | {by_cat[c] / n:.1%} |")
    n_instr = sum(instructed.values())
    lines.append(f"| | **total** | **{n}** | **{n_instr}** | 100% |")
    groups = Counter(GROUPS[q.category] for q in queries)
    lengths = sorted(_words(q) for q in queries)
    buckets = [(1, 3), (4, 8), (9, 15), (16, 30), (31, 60), (61, 10**6)]
    hist = ", ".join((f"{lo}-{hi}" if hi < 10**6 else f"{lo}+") + f": {sum(lo <= w <= hi for w in lengths)}"
                     for lo, hi in buckets)
    templates = Counter(q.template for q in queries if q.template)
    lines += [
        "",
        f"- queries: {n}; with an instruction: {n_instr} ({n_instr / n:.0%}); bare input: {n - n_instr}",
        "- groups: " + ", ".join(f"{g} {groups[g]}" for g in group_order),
        f"- words per query (instruction + input): min {lengths[0]}, median {lengths[n // 2]}, max {lengths[-1]}",
        f"- length histogram (words): {hist}",
        f"- distinct shared phrasings (instructions, templates, fillers): {len(templates)}; "
        f"most used: {max(templates.values())} times",
        f"- near-duplicate pairs (word-set Jaccard >= {NEAR_DUPLICATE}): {len(near_duplicates(queries))}",
    ]
    return "\n".join(lines)


def _readme(composition: str) -> str | None:
    """README.md with its composition block replaced (None if the file or its markers are missing)."""
    if not README.exists():
        return None
    text = README.read_text(encoding="utf-8")
    new, found = STATS_BLOCK.subn(lambda m: m.group(1) + composition + m.group(2), text)
    return new if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m see.negatives.build_pool", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if general.jsonl or README.md's composition is stale; write nothing")
    parser.add_argument("--stats", action="store_true", help="print the composition; write nothing")
    args = parser.parse_args(argv)
    queries = build()
    text, composition = render(queries), stats(queries)
    readme = _readme(composition)
    if args.stats:
        print(composition)
    if args.check:
        stale = [path.name for path, want in ((OUT, text), (README, readme))
                 if want is None or not path.exists() or path.read_text(encoding="utf-8") != want]
        if stale:
            print(f"stale: {', '.join(stale)}; run python -m see.negatives.build_pool", file=sys.stderr)
            return 1
        print(f"{OUT.name} and {README.name} are up to date ({len(queries)} queries)")
    if not (args.check or args.stats):
        OUT.write_text(text, encoding="utf-8", newline="\n")
        if readme is not None:
            README.write_text(readme, encoding="utf-8", newline="\n")
        print(f"wrote {len(queries)} queries to {OUT}" + ("" if readme is not None else
              f" ({README.name} has no <!-- stats --> block to update)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
