"""What compare, rank and a run show: plots (:mod:`.plots`), text tables and table cells (:mod:`.tables`) and
the self-contained HTML report (:mod:`.html_report`). Nothing here imports ``comparison`` or ``ranking``."""
