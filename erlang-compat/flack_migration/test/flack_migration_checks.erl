%% Checks of flack_migration that need neither the original flack nor
%% gproc, run on a plain erl node by tests/compat_app.rs:
%%
%%  - swap: our chat_stream goes in over a stand-in (test/stand_in) while
%%    processes are inside the stand-in's code, and comes out again only
%%    once none is; nobody is killed, and the stand-in's exact code is back;
%%  - refusals: a running chat_stream that is not the one on the code path,
%%    or one without the original's API, is not replaced;
%%  - lost members: what flack_migration_watch reads from a table in
%%    gproc 0.8.0's layout when a node goes down, and what it announces.
%%
%% run([OursBeam, StandInDir, DifferentDir, NoLeaveDir]) prints one line
%% per check ("ok NAME" or "FAIL NAME: ...") and halts with 0 or 1.
-module(flack_migration_checks).

-export([run/1]).

run([OursBeam, StandIn, Different, NoLeave]) ->
    {ok, Ours} = file:read_file(OursBeam),
    application:load({application, flack_migration, [{env, [{purge_deadline_ms, 500}]}]}),
    Results = [check(swap, fun() -> swap(Ours, StandIn) end),
               check(refuse_other_running_code, fun() -> refuse_different(Ours, StandIn, Different) end),
               check(refuse_missing_api, fun() -> refuse_no_leave(Ours, NoLeave) end),
               check(lost_members, fun lost_members/0)],
    halt(case lists:all(fun(R) -> R end, Results) of true -> 0; false -> 1 end).

check(Name, Fun) ->
    try Fun() of
        ok -> io:format("ok ~s~n", [Name]), true
    catch
        C:R:S -> io:format("FAIL ~s: ~0p~n", [Name, {C, R, S}]), false
    end.

fresh(Dir) ->
    code:purge(chat_stream),
    code:delete(chat_stream),
    code:purge(chat_stream),
    [code:del_path(D) || D <- code:get_path(), filename:basename(D) =/= "ebin",
                         filelib:is_file(filename:join(D, "chat_stream.beam"))],
    true = code:add_patha(Dir),
    {module, chat_stream} = code:load_file(chat_stream).

holders(N) ->
    Me = self(),
    Pids = [spawn(fun() -> chat_stream:hold(Me) end) || _ <- lists:seq(1, N)],
    [receive {holding, P} -> ok after 5000 -> error(no_holder) end || P <- Pids],
    Pids.

swap(Ours, StandIn) ->
    fresh(StandIn),
    StandInMd5 = chat_stream:module_info(md5),
    StandInFile = code:which(chat_stream),
    %% Five processes inside the stand-in's code while ours goes in.
    Holders = holders(5),
    ok = flack_migration_code:install({"flack_migration:chat_stream.beam", Ours}),
    true = flack_migration_code:installed(),
    true = lists:all(fun erlang:is_process_alive/1, Holders),
    {ok, {chat_stream, OursMd5}} = beam_lib:md5(Ours),
    OursMd5 = chat_stream:module_info(md5),
    %% Installing again changes nothing.
    ok = flack_migration_code:install({"flack_migration:chat_stream.beam", Ours}),
    %% The stand-in is old code with processes in it: restoring would have
    %% to purge it, so it is refused and nobody dies.
    {error, {busy, _}} = flack_migration_code:restore(),
    true = flack_migration_code:installed(),
    true = lists:all(fun erlang:is_process_alive/1, Holders),
    %% They finish; now it goes back, byte for byte.
    [begin Ref = monitor(process, P), P ! go,
           receive {'DOWN', Ref, process, P, normal} -> ok after 5000 -> error({holder, P}) end
     end || P <- Holders],
    ok = flack_migration_code:restore(),
    false = flack_migration_code:installed(),
    StandInMd5 = chat_stream:module_info(md5),
    StandInFile = code:which(chat_stream),
    {stand_in, post, m} = chat_stream:post(m),
    %% Restoring twice is harmless.
    ok = flack_migration_code:restore(),
    ok.

refuse_different(Ours, StandIn, Different) ->
    fresh(StandIn),
    %% Someone hot-loaded other code than the file on the path.
    {ok, Bin} = file:read_file(filename:join(Different, "chat_stream.beam")),
    true = code:soft_purge(chat_stream),
    {module, chat_stream} = code:load_binary(chat_stream, "elsewhere/chat_stream.beam", Bin),
    true = code:soft_purge(chat_stream),
    {error, {running_chat_stream_differs_from, _}} =
        flack_migration_code:install({"flack_migration:chat_stream.beam", Ours}),
    false = flack_migration_code:installed(),
    {stand_in_variant, post, m} = chat_stream:post(m),
    ok.

refuse_no_leave(Ours, NoLeave) ->
    fresh(NoLeave),
    {error, {not_flacks_chat_stream, _, missing, [{leave, 2}]}} =
        flack_migration_code:install({"flack_migration:chat_stream.beam", Ours}),
    false = flack_migration_code:installed(),
    ok.

%% A pid of another node, as a term from the wire (NEW_PID_EXT).
remote_pid(Node, Id) ->
    Name = atom_to_binary(Node, utf8),
    binary_to_term(<<131, 88, 119, (byte_size(Name)), Name/binary, Id:32, 0:32, 1:32>>).

lost_members() ->
    Dead = 'dead@host',
    Alive = 'alive@host',
    [A, B, C] = [remote_pid(Dead, I) || I <- [10, 11, 12]],
    Other = remote_pid(Alive, 20),
    Local = self(),
    T = ets:new(gproc_layout, [ordered_set]),
    Attrs = fun(Name, Id) -> [{attrs, [{username, Name}, {user_id, Id}]}] end,
    ets:insert(T, [
        %% user registrations {n,g,Pid} and their reverse entries
        {{{n, g, A}, n}, A, undefined}, {{A, {n, g, A}}, Attrs(<<"ann">>, <<"a-id">>)},
        {{{n, g, B}, n}, B, undefined}, {{B, {n, g, B}}, Attrs(<<"bob">>, <<"b-id">>)},
        {{{n, g, Other}, n}, Other, undefined}, {{Other, {n, g, Other}}, Attrs(<<"oz">>, <<"o-id">>)},
        {{{n, g, Local}, n}, Local, undefined}, {{Local, {n, g, Local}}, Attrs(<<"me">>, <<"m-id">>)},
        %% memberships {p,g,Chat}: A in two rooms, B in one, C (never
        %% authenticated, no user entry) in one, the others elsewhere
        {{{p, g, <<"r1">>}, A}, A, undefined}, {{A, {p, g, <<"r1">>}}, []},
        {{{p, g, <<"r2">>}, A}, A, undefined}, {{A, {p, g, <<"r2">>}}, []},
        {{{p, g, <<"r1">>}, B}, B, undefined}, {{B, {p, g, <<"r1">>}}, []},
        {{{p, g, <<"r3">>}, C}, C, undefined}, {{C, {p, g, <<"r3">>}}, []},
        {{{p, g, <<"r1">>}, Other}, Other, undefined},
        {{{p, g, <<"r1">>}, Local}, Local, undefined},
        %% sequence counters: one owned on the dead node, one elsewhere
        {{{c, g, {flack_seq, <<"r1">>}}, A}, A, 17},
        {{{c, g, {flack_seq, <<"r2">>}}, Other}, Other, 5},
        %% a property that is not a chat
        {{{p, g, {other, key}}, A}, A, x}]),
    Lost = lists:sort(flack_migration_watch:lost_members(T, Dead)),
    Lost = lists:sort([{member, <<"r1">>, A}, {member, <<"r2">>, A}, {member, <<"r1">>, B},
                       {member, <<"r3">>, C},
                       {user, A, Attrs(<<"ann">>, <<"a-id">>)},
                       {user, B, Attrs(<<"bob">>, <<"b-id">>)},
                       {counter, <<"r1">>, 17}]),
    [] = flack_migration_watch:lost_members(T, 'never@host'),
    Plan = flack_migration_watch:plan(Lost),
    [{counter, <<"r1">>, 17} | Chats] = Plan,
    Chats = lists:sort([{<<"r1">>, lists:sort(proplists:get_value(<<"r1">>, Chats))},
                        {<<"r2">>, [<<"a-id">>]}]),
    [<<"a-id">>, <<"b-id">>] = lists:sort(proplists:get_value(<<"r1">>, Chats)),
    [] = flack_migration_watch:plan([{member, <<"r3">>, C}]),
    %% The view kept between refreshes: remote members of the chats that
    %% have a member here (r1 only), with their user ids.
    Remote = flack_migration_watch:remote_members(T),
    [A, B, Other] = lists:sort(maps:keys(Remote)),
    {<<"a-id">>, [<<"r1">>]} = maps:get(A, Remote),
    {<<"b-id">>, [<<"r1">>]} = maps:get(B, Remote),
    {<<"o-id">>, [<<"r1">>]} = maps:get(Other, Remote),
    View = maps:map(fun(_, {Id, In}) -> {Id, In, make_ref()} end,
                    Remote#{A => {<<"a-id">>, [<<"r1">>, <<"r9">>]}}),
    %% The purge came first: nothing of the dead node is left in the
    %% replica, so the view says who was there.
    Purged = flack_migration_watch:merge([], Dead, View),
    [{<<"r1">>, R1}, {<<"r9">>, [<<"a-id">>]}] = flack_migration_watch:plan(Purged),
    [<<"a-id">>, <<"b-id">>] = lists:sort(R1),
    %% The replica still lists them: its entries win over the view's
    %% (A's r9 is gone from the replica, so nobody hears of it).
    Listed = flack_migration_watch:merge(Lost, Dead, View),
    Plan = flack_migration_watch:plan(Listed),
    %% Half purged: B's user entry is gone, its membership is not.
    Half = [E || E <- Lost, E =/= {user, B, Attrs(<<"bob">>, <<"b-id">>)}],
    Plan = flack_migration_watch:plan(flack_migration_watch:merge(Half, Dead, View)),
    %% A process's own registrations, by its reverse entries.
    {<<"a-id">>, AChats} = flack_migration_watch:still_registered(T, A),
    [<<"r1">>, <<"r2">>] = lists:sort(AChats),
    {undefined, [<<"r3">>]} = flack_migration_watch:still_registered(T, C),
    {undefined, []} = flack_migration_watch:still_registered(T, remote_pid(Dead, 99)),
    %% A process that ended while its node was up: killed, the view says
    %% where it was if the leader cleaned up first; otherwise only what the
    %% replica still lists counts (it may have left the rest itself).
    {<<"a-id">>, [<<"r1">>]} = flack_migration_watch:ended_in({undefined, []}, {<<"a-id">>, [<<"r1">>]}, killed),
    {<<"a-id">>, []} = flack_migration_watch:ended_in({undefined, []}, {<<"a-id">>, [<<"r1">>]}, normal),
    {<<"a-id">>, []} = flack_migration_watch:ended_in({undefined, []}, {<<"a-id">>, [<<"r1">>]}, shutdown),
    {<<"a-id">>, [<<"r2">>]} = flack_migration_watch:ended_in({<<"a-id">>, [<<"r2">>]}, {<<"a-id">>, [<<"r1">>]}, normal),
    {<<"a-id">>, [<<"r2">>]} = flack_migration_watch:ended_in({undefined, [<<"r2">>]}, {<<"a-id">>, [<<"r1">>]}, killed),
    {undefined, []} = flack_migration_watch:ended_in({undefined, []}, {undefined, []}, killed),
    %% Other nodes' members are never taken from the view.
    [] = flack_migration_watch:plan(flack_migration_watch:merge([], 'never@host', View)),
    ok.
