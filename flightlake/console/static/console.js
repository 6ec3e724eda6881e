// flightlake console: upload progress for the htmx upload form. No inline script anywhere
// (the Content-Security-Policy allows only this file and htmx.min.js).
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
  document.addEventListener("htmx:xhr:loadend", function (event) {
    var progress = bar(event.target.closest && event.target.closest("#upload-form"));
    if (progress) {
      progress.hidden = true;
    }
  });
})();
