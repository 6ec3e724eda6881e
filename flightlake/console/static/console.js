// flightlake console: upload progress for the htmx upload form, and a message where an answer
// would go when a request gets none.
// No inline script anywhere (the Content-Security-Policy allows only this file and htmx.min.js).
"use strict";
(function () {
  function bar(form) {
    return form ? form.querySelector("progress") : null;
  }
  document.addEventListener("htmx:xhr:loadstart", function (event) {
    var progress = bar(event.target.closest && event.target.closest("#upload-form"));
    if (progress) {
      progress.value = 0;
      progress.hidden = false;
    }
  });
  document.addEventListener("htmx:xhr:progress", function (event) {
    var progress = bar(event.target.closest && event.target.closest("#upload-form"));
    if (progress && event.detail.lengthComputable && event.detail.total > 0) {
      progress.value = Math.round((100 * event.detail.loaded) / event.detail.total);
    }
  });
  // A request that gets no answer at all (the connection was reset or refused, or timed out)
  // is an htmx sendError/timeout with nothing to swap in: say so where the answer would go.
  function noAnswer(event) {
    var target = event.detail && event.detail.target;
    if (!target || !target.id) {
      return;
    }
    var message = document.createElement("p");
    message.className = "message error";
    message.id = "error-message";
    message.textContent = target.id === "outcome"
      ? "The upload got no answer: the connection to the server was lost. " +
        "The dataset may or may not have changed; look at its versions before you retry."
      : "No answer: the connection to the server was lost. Try again.";
    target.replaceChildren(message);
  }
  document.addEventListener("htmx:sendError", noAnswer);
  document.addEventListener("htmx:timeout", noAnswer);
  document.addEventListener("htmx:xhr:loadend", function (event) {
    var progress = bar(event.target.closest && event.target.closest("#upload-form"));
    if (progress) {
      progress.hidden = true;
    }
  });
})();
