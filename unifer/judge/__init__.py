"""A judge model rates the reasoning of a run's responses on a versioned rubric (``unifer judge``): ``rubric``
(the rubric, the structured output, the strict parser), ``run`` (cache, resume, retries), ``cli`` (the command).
"""
