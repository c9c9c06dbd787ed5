"""`vtk view`: a shard set in the browser, served by the standard library's http.server.

- ``index``: a lazy index of a shard set (per-shard sample lists, bounded caches); filtering,
  sorting and paging.
- ``members``: a tar's sample list from its ``.idx`` or headers; members read by offset; posters.
- ``server``: the HTTP routes (page, JSON API, mp4 members with byte ranges, posters, the set's
  own files) and the checks that keep requests inside the set.
- ``export``: the same page as static files (``vtk view DIR --static OUT``).
- ``static/``: the page (html, one small script, one style sheet).
"""
