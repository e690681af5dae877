"""The neuron atlas: every lens's findings about one unit on one card, as a static site (`lensneurons atlas`).

`sources` reads each lens's saved results per unit, `tokens` reads top and random sentences token by token,
`cards` joins them (with a rule-based summary line), `site` writes the searchable static site and the exports
(`schema` documents them), `study` runs it all, resumably.
"""
