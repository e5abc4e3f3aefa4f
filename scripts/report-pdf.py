#!/usr/bin/env python3
"""docs/performance/README.md -> docs/performance/report.pdf, with its SVG charts.

Markdown is turned into HTML (python-markdown) and printed by WeasyPrint, which draws SVG
images itself: no browser, no LaTeX. Both come from PyPI: pip install weasyprint markdown.

    usage: scripts/report-pdf.py [README.md] [report.pdf]
"""

import os
import sys

import markdown
import weasyprint

CSS = """
@page { size: A4; margin: 16mm 13mm 16mm 13mm;
        @bottom-center { content: "distsync performance report · page " counter(page) " of " counter(pages);
                         font-size: 8pt; color: #666; font-family: "DejaVu Sans", sans-serif; } }
body { font-family: "DejaVu Sans", sans-serif; font-size: 9.5pt; line-height: 1.4; color: #222; }
h1 { font-size: 19pt; border-bottom: 2px solid #333; padding-bottom: 3pt; }
h2 { font-size: 14pt; border-bottom: 1px solid #aaa; margin-top: 16pt; page-break-after: avoid; }
h3 { font-size: 11.5pt; page-break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: 6pt 0; font-size: 7.5pt;
        page-break-inside: auto; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #bbb; padding: 2pt 4pt; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #eee; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 8pt; overflow-wrap: break-word; }
pre { background: #f5f5f5; padding: 5pt; font-size: 8pt; white-space: pre-wrap; }
img { width: 100%; max-width: 17cm; display: block; margin: 6pt auto; page-break-inside: avoid; }
"""


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "performance")
    source = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "README.md")
    target = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "report.pdf")
    with open(source, encoding="utf-8") as f:
        body = markdown.markdown(f.read(), extensions=["tables", "fenced_code"])
    html = f"<html><head><meta charset='utf-8'><style>{CSS}</style></head><body>{body}</body></html>"
    # base_url: chart links in the markdown are relative to the markdown file.
    document = weasyprint.HTML(string=html, base_url=os.path.dirname(os.path.abspath(source)))
    document.write_pdf(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
