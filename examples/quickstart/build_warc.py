"""Build the quickstart WARC from the pages below (written for this project, CC0).

It holds what a real crawl slice holds: English and German articles, a boilerplate-only page, a page
whose HTTP header lies about its charset, a redirect, a 404, an image, a request and a revisit record.
Run ``python examples/quickstart/build_warc.py`` to rebuild ``quickstart.warc.gz``.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

DATE = "2026-11-01T12:00:00Z"

ARTICLES = {
    "https://garden.example.org/notes/winter-compost": (
        "Keeping a compost heap alive through the winter",
        [
            "A compost heap does not have to stop working when the first frost arrives. The microbes that "
            "break down kitchen scraps and garden waste slow down in the cold, but a well built heap keeps "
            "enough heat in its core to stay active for most of the season.",
            "The most important step is size. A heap smaller than about one cubic metre loses heat faster "
            "than it can produce it, so it is worth combining several small piles into one large one before "
            "the weather turns. Insulating the sides with straw bales or old cardboard helps as well.",
            "Balance still matters in winter. Aim for roughly two parts of brown material, such as dry "
            "leaves, shredded paper and straw, to one part of green material, such as vegetable peelings and "
            "coffee grounds. Too much green material makes the heap wet and smelly, while too much brown "
            "material leaves it cold and slow.",
            "Finally, do not turn the heap as often as you would in summer. Every time it is opened, warm "
            "air escapes. Turning it once a month is usually enough, and by spring the lower layers will be "
            "dark, crumbly and ready to spread on the beds.",
        ],
    ),
    "https://transit.example.com/blog/night-buses": (
        "Why the city is bringing back night buses",
        [
            "After three years without a regular overnight service, the city council voted on Tuesday to "
            "restore four night bus routes linking the centre with the northern and eastern suburbs. The "
            "routes will run every thirty minutes between midnight and five in the morning.",
            "Supporters of the plan point out that many hospital staff, cleaners and hospitality workers "
            "finish their shifts long after the last train has left. For them, the only options have been "
            "expensive taxis or long walks home, and a survey last spring found that almost half of night "
            "workers had missed a shift because they could not get to work.",
            "The service will cost about four million a year. Part of the money comes from a new parking "
            "levy in the city centre, and the rest from the regional transport budget. Officials said the "
            "routes would be reviewed after eighteen months, using passenger counts and safety reports.",
            "Local business groups welcomed the decision, saying that late opening hours only make sense if "
            "both customers and staff can travel safely. The first buses are expected to run in March.",
        ],
    ),
    "https://kitchen.example.net/recipes/lentil-soup": (
        "A simple red lentil soup for busy evenings",
        [
            "This soup takes about half an hour from start to finish and uses ingredients that most "
            "kitchens already have. Red lentils cook quickly and break down into a thick, creamy base "
            "without any need for cream or a blender.",
            "Start by softening a chopped onion, two cloves of garlic and a diced carrot in a little olive "
            "oil. Add a teaspoon of ground cumin and a pinch of chilli flakes, and stir for a minute until "
            "the spices smell fragrant.",
            "Rinse two hundred grams of red lentils, add them to the pot with a litre of vegetable stock and "
            "a tin of chopped tomatoes, and let everything simmer for twenty minutes. Stir now and then so "
            "that the lentils do not stick to the bottom of the pan.",
            "Season with salt, pepper and a squeeze of lemon juice just before serving. The soup keeps well "
            "in the fridge for three days, and it tastes even better the next day, when the flavours have "
            "had time to settle.",
        ],
    ),
}

GERMAN = (
    "https://wetter.example.de/artikel/herbststurm",
    "Herbststurm zieht über Norddeutschland",
    [
        "Ein kräftiger Herbststurm hat in der Nacht zum Montag weite Teile Norddeutschlands erreicht. "
        "An der Küste wurden Windgeschwindigkeiten von mehr als hundert Kilometern pro Stunde gemessen, "
        "und mehrere Fährverbindungen zu den Inseln mussten ausfallen.",
        "Die Feuerwehr rückte zu zahlreichen Einsätzen aus, weil umgestürzte Bäume Straßen und Bahnstrecken "
        "blockierten. Verletzt wurde nach ersten Angaben niemand. Der Deutsche Wetterdienst rechnet damit, "
        "dass der Wind im Laufe des Tages allmählich nachlässt.",
    ],
)

BOILERPLATE = "https://shop.example.com/category/shoes?page=7"


def article_html(title: str, paragraphs: list[str], lang: str = "en", charset: str = "utf-8") -> str:
    nav = "".join(f'<li><a href="/section/{i}">Section {i}</a></li>' for i in range(1, 9))
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="{charset}"><title>{title}</title></head>'
        f"<body><header><nav><ul>{nav}</ul></nav></header>"
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        f'<footer><p>Contact | Privacy | Terms</p><p>© 2026 Example Media</p></footer></body></html>'
    )


def boilerplate_html() -> str:
    links = "".join(f'<li><a href="/p/{i}">Shoe {i}</a> <span>€{30 + i}.99</span></li>' for i in range(40))
    return (
        "<!DOCTYPE html><html><head><title>Shoes - page 7</title></head><body>"
        f"<nav><ul>{links}</ul></nav><footer>Cookies | Imprint | Login</footer></body></html>"
    )


def _record_id(uri: str, kind: str) -> str:
    digest = hashlib.sha1(f"{kind}:{uri}".encode()).hexdigest()
    return f"<urn:uuid:{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}>"


def _response(writer: WARCWriter, uri: str, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
    http = StatusAndHeaders(status, headers + [("Content-Length", str(len(body)))], protocol="HTTP/1.1")
    warc_headers = {"WARC-Date": DATE, "WARC-Record-ID": _record_id(uri, "response")}
    record = writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=http,
                                       warc_headers_dict=warc_headers)
    writer.write_record(record)


def build(path: Path) -> Path:
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "curate quickstart builder"}))
        for uri, (title, paragraphs) in ARTICLES.items():
            req = StatusAndHeaders(f"GET {uri} HTTP/1.1", [("Host", uri.split("/")[2])], is_http_request=True)
            writer.write_record(writer.create_warc_record(
                uri, "request", http_headers=req,
                warc_headers_dict={"WARC-Date": DATE, "WARC-Record-ID": _record_id(uri, "request")}))
            _response(writer, uri, "200 OK", [("Content-Type", "text/html; charset=utf-8")],
                      article_html(title, paragraphs).encode("utf-8"))
        uri, title, paragraphs = GERMAN
        # The header claims UTF-8 but the bytes are Windows-1252, as on many older sites.
        _response(writer, uri, "200 OK", [("Content-Type", "text/html; charset=utf-8")],
                  article_html(title, paragraphs, lang="de", charset="windows-1252").encode("cp1252"))
        _response(writer, BOILERPLATE, "200 OK", [("Content-Type", "text/html")], boilerplate_html().encode())
        _response(writer, "https://garden.example.org/old-notes", "301 Moved Permanently",
                  [("Location", "https://garden.example.org/notes/winter-compost"), ("Content-Type", "text/html")],
                  b"<html><body>Moved</body></html>")
        _response(writer, "https://transit.example.com/missing", "404 Not Found", [("Content-Type", "text/html")],
                  b"<html><body><h1>Not found</h1></body></html>")
        _response(writer, "https://garden.example.org/img/heap.png", "200 OK", [("Content-Type", "image/png")],
                  b"\x89PNG\r\n\x1a\n" + bytes(64))
        revisit_uri = "https://kitchen.example.net/recipes/lentil-soup"
        writer.write_record(writer.create_revisit_record(
            revisit_uri, digest="sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", refers_to_uri=revisit_uri, refers_to_date=DATE,
            warc_headers_dict={"WARC-Date": "2026-11-02T12:00:00Z", "WARC-Record-ID": _record_id(revisit_uri, "revisit")}))
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("quickstart.warc.gz")
    print(build(target))
