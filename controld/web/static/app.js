// Live updates: the page's event stream sends its live part, rendered on the
// server, whenever the directory changes; we swap it in and keep the focus.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var live = document.querySelector("[data-live]");
  var conn = document.getElementById("conn");
  if (!main || !live || !main.dataset.stream || !window.EventSource) {
    return;
  }
  var es = null;

  function swap(html) {
    var focused = document.activeElement;
    var id = focused && live.contains(focused) ? focused.id : "";
    live.innerHTML = html;
    if (id) {
      var again = document.getElementById(id);
      if (again) {
        again.focus();
      }
    }
  }

  function connect(url) {
    if (es) {
      es.close();
    }
    es = new EventSource(url);
    es.addEventListener("update", function (e) {
      conn.textContent = "";
      swap(e.data);
    });
    es.addEventListener("ended", function () {
      es.close();
      conn.innerHTML = 'Your session ended. <a href="/login">Log in again</a>.';
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        conn.innerHTML = 'Live updates stopped. <a href="">Reload the page</a>.';
      } else {
        conn.textContent = "Reconnecting…";
      }
    };
  }
  connect(main.dataset.stream);

  // The overview's search: the server filters; typing reconnects the stream
  // with the new words and keeps the address in step.
  var search = document.querySelector("[data-live-search]");
  if (search) {
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var params = new URLSearchParams(new FormData(search.form));
        history.replaceState(null, "", "/?" + params.toString());
        params.set("view", "overview");
        connect("/events?" + params.toString());
      }, 250);
    });
  }
})();
