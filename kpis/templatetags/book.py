"""The data-status panel's facts, read once per page by the shared dashboard header."""

from django import template

from loans.selectors import BookSources, book_sources_read

register = template.Library()


@register.simple_tag
def book_sources() -> BookSources:
    return book_sources_read()
